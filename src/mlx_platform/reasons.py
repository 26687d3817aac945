"""A request's field errors in plain words: pydantic's reason, except where it would quote a
regular expression (a name, a type, a class path) or a term of its own ("Field required").
Used by the API's 422 answers (server/errors.py), `mlx plugins check` (core/definition.py)
and discovery's invalid manifests (discovery/common.py), so that all say the same."""

from __future__ import annotations

from typing import Any

# What each constrained string of the requests must look like, by the field's name (the
# last part of its location); the patterns themselves are wire.py's.
_FORMS = {
    "name": "must start with a letter, then letters, digits, '_', '.' or '-' (at most 100 "
    "characters in all), such as sqlite_source",
    "type": "must be lower-case letters, digits and '_', starting with a letter, such as "
    "data_source",
    "class_path": "must be the dotted path of a class, such as my_package.module.MyPlugin",
    "include_namespace": "must be a dotted package name, such as mlx_plugins",
}

VERSION_FORM = "must be a version such as 1.2.0 (PEP 440)"


def plain_reason(error: Any) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as a reason in plain words;
    the input itself is never quoted."""
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    field = str(loc[-1]) if loc else ""
    if kind == "string_pattern_mismatch":
        return _FORMS.get(field, "is not in the expected form")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    return str(error.get("msg", "is invalid"))
