"""Plugin configuration schemas: the spec's field format, its JSON Schema form, validation.

Validation goes through the `jsonschema` library; its messages are not used as they are,
because they quote the offending value, and the value may be a secret. Each error is
re-worded from its validator keyword instead, naming the field and the rule, never the value.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from mlx_platform.wire import SECRET_MASK

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaError

_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def to_json_schema(
    schema: dict[str, dict[str, Any]], *, title: str | None = None
) -> dict[str, Any]:
    """The spec-format schema as standard JSON Schema (draft 2020-12).

    Undeclared fields are allowed (``additionalProperties: true``): the spec's activation
    example passes fields its schema does not list.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in schema.items():
        prop: dict[str, Any] = {"type": _JSON_TYPES.get(field.get("type", "string"), "string")}
        if field.get("description"):
            prop["description"] = field["description"]
        if field.get("default") is not None:
            prop["default"] = SECRET_MASK if field.get("secret") else field["default"]
        if field.get("enum") is not None:
            prop["enum"] = field["enum"]
        if field.get("minimum") is not None:
            prop["minimum"] = field["minimum"]
        if field.get("maximum") is not None:
            prop["maximum"] = field["maximum"]
        if field.get("pattern") is not None:
            prop["pattern"] = field["pattern"]
        if field.get("items") is not None:
            prop["items"] = field["items"]
        if field.get("secret"):
            prop["writeOnly"] = True
            prop["format"] = "password"
        if field.get("hot_reload") is False:
            prop["x-hot-reload"] = False
        properties[name] = prop
        if field.get("required"):
            required.append(name)
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
    }
    if title:
        out["title"] = title
    if required:
        out["required"] = required
    return out


def check_schema_definition(schema: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Problems in a schema's own definition (a bad regex, min above max, an `items` that is
    not JSON Schema, a default that breaks its own field's rules), by field."""
    import re

    problems: dict[str, str] = {}
    sound: dict[str, dict[str, Any]] = {}  # the fields whose defaults can be checked
    for name, field in schema.items():
        pattern = field.get("pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems[f"configuration_schema.{name}.pattern"] = f"not a valid regex: {exc}"
                continue  # the default cannot be matched against it
        lo, hi = field.get("minimum"), field.get("maximum")
        if lo is not None and hi is not None and lo > hi:
            problems[f"configuration_schema.{name}"] = "minimum is greater than maximum"
        enum = field.get("enum")
        if enum is not None and len(enum) == 0:
            problems[f"configuration_schema.{name}.enum"] = "must list at least one value"
            continue
        sound[name] = field
    # `items` is the one part of a field passed through as JSON Schema (the others are the
    # register request model's): checked against the metaschema, so that a default (and a
    # value) can be validated with it
    for name, field in list(sound.items()):
        items = field.get("items")
        if items is None:
            continue
        err = next(iter(_meta().iter_errors(items)), None)
        if err is not None:
            where = ".".join(["items", *(str(p) for p in err.absolute_path)])
            problems[f"configuration_schema.{name}"] = (
                f"not a valid schema ({where}): {err.message}"
            )
            del sound[name]
    # the rules every activation applies to a value, applied to the defaults now: a default
    # that breaks them would fail every activation that leaves its field unset
    defaults = {n: f["default"] for n, f in sound.items() if f.get("default") is not None}
    if defaults:
        wrong = validate_configuration({n: sound[n] for n in defaults}, defaults)
        for name, reason in wrong.items():
            problems[f"configuration_schema.{name}.default"] = f"the default {reason}"
    return problems


def _validator() -> type[Draft202012Validator]:
    """jsonschema's draft 2020-12 validator, imported at the first validation: the library
    (and referencing, attrs...) cost the service's start ~40 ms, and a start with no plugin
    to activate validates nothing."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator


@functools.cache
def _meta() -> Draft202012Validator:
    """Checks that a schema is JSON Schema (draft 2020-12): the metaschema as a validator."""
    validator = _validator()
    return validator(validator.META_SCHEMA)


def _reason(err: SchemaError, field_def: dict[str, Any]) -> str:
    """Words for one jsonschema error that never quote the value."""
    kind = err.validator
    inner = list(err.absolute_path)[1:]  # inside the field: an item of an array, a key
    if inner:
        where = "item " + ".".join(str(p) for p in inner)
        if kind == "type":
            return f"{where} must be of type {err.validator_value}"
        return f"{where} fails the '{kind}' rule"
    if kind == "type":
        return f"must be of type {field_def.get('type', err.validator_value)}"
    if kind == "enum":
        if field_def.get("secret"):
            return "is not one of the allowed values"
        allowed = err.validator_value if isinstance(err.validator_value, list) else []
        return "must be one of: " + ", ".join(repr(v) for v in allowed)
    if kind == "minimum":
        return f"must be >= {err.validator_value}"
    if kind == "maximum":
        return f"must be <= {err.validator_value}"
    if kind == "pattern":
        return f"must match the pattern {err.validator_value!r}"
    return f"fails the '{kind}' rule"


def validate_configuration(
    schema: dict[str, dict[str, Any]], config: dict[str, Any]
) -> dict[str, str]:
    """Every problem of `config` against `schema`, one entry per bad field: {field: reason}."""
    validator = _validator()(to_json_schema(schema))
    problems: dict[str, str] = {}
    for err in validator.iter_errors(config):
        if err.validator == "required":
            props = err.validator_value
            for name in props:
                if name not in config:
                    problems.setdefault(name, "is required")
            continue
        field = str(err.absolute_path[0]) if err.absolute_path else "configuration"
        problems.setdefault(field, _reason(err, schema.get(field, {})))
    for name, value in config.items():
        # jsonschema counts True as an integer/number (it is one in Python): refuse it.
        ftype = schema.get(name, {}).get("type")
        if ftype in ("integer", "number") and isinstance(value, bool):
            problems.setdefault(name, f"must be of type {ftype}")
    return problems


def apply_defaults(schema: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for name, field in schema.items():
        if name not in out and field.get("default") is not None:
            out[name] = field["default"]
    return out


def secret_fields(schema: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, field in schema.items() if field.get("secret")}


def cold_fields(schema: dict[str, dict[str, Any]]) -> set[str]:
    """Fields whose change cannot be applied hot (declared ``hot_reload: false``)."""
    return {name for name, field in schema.items() if field.get("hot_reload") is False}


def summary(schema: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        "required_fields": [n for n, f in schema.items() if f.get("required")],
        "optional_fields": [n for n, f in schema.items() if not f.get("required")],
    }


def public_schema(schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The schema as shown to clients: a secret field's default is masked; None keys dropped."""
    out: dict[str, dict[str, Any]] = {}
    for name, field in schema.items():
        shown = {k: v for k, v in field.items() if v is not None}
        if field.get("secret") and field.get("default") is not None:
            shown["default"] = SECRET_MASK
        out[name] = shown
    return out
