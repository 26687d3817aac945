"""A plugin's definition (the register request, a manifest) as the service judges it before
running any of its code: registration refuses what `definition_problems` finds, activation
starts the worker with `worker_options_for`. `mlx plugins check` calls the same functions, so
that the check and the service can never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version
from pydantic import ValidationError as PydanticValidationError

from mlx_platform.composition import rules
from mlx_platform.core import config_schema
from mlx_platform.reasons import VERSION_FORM, plain_reason
from mlx_platform.runtime.instance import WorkerOptions
from mlx_platform.wire import ConfigField, PluginMetadata, RegisterPluginRequest, _from_json_schema

if TYPE_CHECKING:
    from mlx_platform.settings import Settings


def definition_problems(req: RegisterPluginRequest) -> dict[str, str]:
    """Every problem of a well-formed register request that registration refuses (422
    VALIDATION_ERROR), by field: a version that is not PEP 440, a configuration schema whose
    own definition is wrong (a bad pattern, minimum above maximum, a default that breaks its
    own field's rules), metadata the rules cannot read."""
    problems: dict[str, str] = {}
    if req.version and not _is_version(req.version):
        problems["version"] = VERSION_FORM
    schema = {k: v.model_dump() for k, v in req.configuration_schema.items()}
    problems.update(config_schema.check_schema_definition(schema))
    problems.update(rules.check_metadata(req.metadata.model_dump()))
    return problems


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def body_problems(body: Any) -> dict[str, str]:
    """`definition_problems` of a register body that the request model refused: each check
    run on the parts of the body that are well-formed on their own (the version a string, each
    configuration field one the model takes, the metadata), so that the one 422 answer names
    these problems beside the model's."""
    if not isinstance(body, dict):
        return {}
    problems: dict[str, str] = {}
    version = body.get("version")
    if isinstance(version, str) and version and not _is_version(version):
        problems["version"] = VERSION_FORM
    schema = _from_json_schema(body.get("configuration_schema"))
    if isinstance(schema, dict):
        fields: dict[str, dict[str, Any]] = {}
        for name, field in schema.items():
            try:
                fields[str(name)] = ConfigField.model_validate(field).model_dump()
            except PydanticValidationError:
                continue  # the model's own errors name it
        problems.update(config_schema.check_schema_definition(fields))
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        try:
            problems.update(
                rules.check_metadata(PluginMetadata.model_validate(metadata).model_dump())
            )
        except PydanticValidationError:
            pass
    return problems


def parse_manifest(manifest: dict[str, Any]) -> tuple[RegisterPluginRequest | None, dict[str, str]]:
    """A manifest as the register request the API would parse from it, and every problem the
    API would answer 422 for, all at once: the request model's (what the body's validation
    refuses) and `definition_problems` (`body_problems` of the parts that are well-formed
    when the model fails). (None, problems) when the model fails."""
    problems: dict[str, str] = {}
    try:
        req = RegisterPluginRequest.model_validate(manifest)
    except PydanticValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "manifest"
            problems.setdefault(where, plain_reason(err))
        for where, reason in body_problems(manifest).items():
            problems.setdefault(where, reason)
        return None, problems
    for key in ("name", "type", "version"):  # a manifest names its plugin
        if not getattr(req, key):
            problems[key] = "is required"
    complete = not problems
    problems.update(definition_problems(req))
    return (req if complete else None), problems


def worker_options_for(settings: Settings, metadata: dict[str, Any]) -> WorkerOptions:
    """How a plugin's worker process is started: metadata `max_memory_mb` (else the setting)
    and `environment` (names of variables passed through), the service-wide user and caps."""
    cap = metadata.get("max_memory_mb")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        cap = settings.worker_max_memory_mb
    declared = metadata.get("environment")
    return WorkerOptions(
        max_memory_mb=cap or None,
        environment=tuple(
            v for v in (declared if isinstance(declared, list) else []) if isinstance(v, str)
        ),
        user=settings.worker_user or None,
        max_result_bytes=settings.max_invoke_result_bytes,
        timeout_grace=settings.timed_out_call_grace,
    )
