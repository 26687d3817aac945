"""`mlx plugins check`: every check registration and activation would run on a plugin, before
it is registered, each with its reason.

The checks are the service's own functions, never copies: the manifest is read by the reader
discovery uses (plugins.load_manifest, or an entry point's target read in a throwaway process)
and judged by the register request model and core.definition (what registration refuses);
the class is imported by the probe registration runs (runtime.probe, a throwaway process);
platform and requirements by the composition rules activation applies; the configuration by
core.config_schema as activation checks it; start, health check and operations in a worker
process started as activation starts one (testing.hosting). Plugin code never runs in the
process that checks. With a service to ask (MLX_API_URL), a dry-run registration there says
whether the service can load the class and how the plugin composes with the active ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlx_platform.testing.manifests import find_manifests, import_roots

if TYPE_CHECKING:
    from mlx_platform.settings import Settings
    from mlx_platform.testing.hosting import HostedPlugin

Status = Literal["pass", "fail", "skip"]

# The order of the lines, and the names a script can rely on.
MANIFEST = "manifest"
SCHEMA = "configuration schema"
CLASS = "class loadable"
PLATFORM = "platform"
CONFIGURATION = "configuration"
START = "start"
HEALTH = "health check"
OPERATION = "operation"  # "operation NAME", one line each
SERVICE_LOADS = "service loads the class"
COMPOSITION = "composition"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    reason: str
    plugin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckOptions:
    """What `mlx plugins check` was given."""

    settings: Settings
    configuration: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, dict[str, Any]] = field(default_factory=dict)  # by operation
    operation_timeout: float = 30.0
    service_url: str | None = None
    service_token: str | None = None


@dataclass
class Candidate:
    """One plugin to check: its manifest (or why it could not be read), where it came from,
    the folders its class imports from."""

    where: str
    manifest: dict[str, Any] | None = None
    error: str | None = None
    extra_paths: list[str] = field(default_factory=list)


class _Lines:
    def __init__(self, plugin: str | None) -> None:
        self.plugin = plugin
        self.items: list[CheckResult] = []

    def add(self, check: str, status: Status, reason: str) -> bool:
        self.items.append(CheckResult(check, status, " ".join(reason.split()), self.plugin))
        return status == "pass"


# ---------------------------------------------------------------- what to check


def candidates(target: str, settings: Settings) -> list[Candidate]:
    """The plugins `target` names: a `mlx-plugin.toml`, a folder holding one (or holding
    plugin folders, or a package in the src layout), or an installed distribution whose
    entry points (group mlx_platform.plugins) name the plugins."""
    path = Path(target)
    if path.exists():
        return _from_path(path)
    return _from_distribution(target, settings)


def _from_path(path: Path) -> list[Candidate]:
    from mlx_platform.plugins import ManifestError, load_manifest

    found = find_manifests(path)
    if not found:
        return [
            Candidate(
                str(path),
                error=f"no mlx-plugin.toml in {path}, in its subfolders or in {path / 'src'}'s",
            )
        ]
    out = []
    for manifest_path in found:
        roots = [str(p) for p in import_roots(manifest_path)]
        try:
            out.append(Candidate(str(manifest_path), load_manifest(manifest_path), None, roots))
        except ManifestError as exc:
            out.append(Candidate(str(manifest_path), error=str(exc), extra_paths=roots))
    return out


def _from_distribution(name: str, settings: Settings) -> list[Candidate]:
    from importlib.metadata import PackageNotFoundError, distribution

    from mlx_platform.discovery.entry_points import GROUP, read_manifests

    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return [
            Candidate(name, error=f"no file or folder {name}, and no installed distribution {name}")
        ]
    points = [ep for ep in dist.entry_points if ep.group == GROUP]
    if not points:
        return [Candidate(name, error=f"distribution {name} declares no entry point in {GROUP}")]
    # imported in a throwaway process, as discovery reads installed plugins
    answers, _runs = read_manifests([ep.value for ep in points], settings.class_check_timeout)
    out = []
    for ep, got in zip(points, answers, strict=True):
        where = f"{name}: entry point {ep.name} = {ep.value}"
        if "manifest" in got:
            out.append(Candidate(where, dict(got["manifest"])))
        else:
            out.append(Candidate(where, error=str(got.get("error") or "unreadable")))
    return out


# ---------------------------------------------------------------- the checks


def check(target: str, options: CheckOptions) -> list[CheckResult]:
    """Every check of every plugin `target` names, in order."""
    found = candidates(target, options.settings)
    out: list[CheckResult] = []
    for candidate in found:
        name = (candidate.manifest or {}).get("name")
        out += check_candidate(candidate, options, str(name) if name else None)
    return out


def check_candidate(
    candidate: Candidate, options: CheckOptions, plugin: str | None = None
) -> list[CheckResult]:
    lines = _Lines(plugin)
    manifest = candidate.manifest
    if manifest is None:
        lines.add(MANIFEST, "fail", f"{candidate.where}: {candidate.error}")
        for name in (SCHEMA, CLASS, PLATFORM, CONFIGURATION, START, HEALTH, OPERATION):
            lines.add(name, "skip", "the manifest could not be read")
        _composition(lines, None, options)
        return lines.items

    from mlx_platform.core.definition import parse_manifest

    req, problems = parse_manifest(manifest)
    schema_problems = {k: v for k, v in problems.items() if k.startswith("configuration_schema")}
    other = {k: v for k, v in problems.items() if k not in schema_problems}
    if other:
        lines.add(MANIFEST, "fail", "; ".join(f"{k}: {v}" for k, v in other.items()))
    else:
        lines.add(
            MANIFEST,
            "pass",
            f"{manifest.get('name')} {manifest.get('version')} ({manifest.get('type')}), "
            f"from {candidate.where}",
        )
    if schema_problems:
        schema_ok = lines.add(
            SCHEMA, "fail", "; ".join(f"{k}: {v}" for k, v in schema_problems.items())
        )
    elif req is None:
        schema_ok = lines.add(SCHEMA, "skip", "the manifest is not a valid register request")
    else:
        fields = req.configuration_schema
        secret = sum(1 for f in fields.values() if f.secret)
        defaults = sum(1 for f in fields.values() if f.default is not None)
        schema_ok = lines.add(
            SCHEMA,
            "pass",
            f"{len(fields)} field(s), {secret} secret; {defaults} default(s), each valid "
            "against its own field",
        )

    class_path = manifest.get("class_path")
    info = _class(lines, class_path, candidate, options)
    metadata = req.metadata.model_dump(exclude_none=True) if req is not None else {}
    _platform(lines, metadata if req is not None else None)

    configuration = None
    if req is None or not schema_ok:
        lines.add(CONFIGURATION, "skip", "the configuration schema is not valid")
    else:
        configuration = _configuration(lines, req, options)

    if info is None or configuration is None or req is None or other:
        if other or req is None:
            why = "registration refuses the manifest"
        elif info is None:
            why = "the class does not load"
        else:
            why = "no valid configuration to start with"
        for name in (START, HEALTH, OPERATION):
            lines.add(name, "skip", why)
    else:
        _run(lines, manifest, configuration, info, candidate, options)
    _composition(lines, manifest if req is not None else None, options)
    return lines.items


def _class(
    lines: _Lines, class_path: Any, candidate: Candidate, options: CheckOptions
) -> dict[str, Any] | None:
    """Registration's probe of the class (a throwaway process); what it offers, or None."""
    if not isinstance(class_path, str) or not class_path:
        lines.add(CLASS, "skip", "the manifest names no class_path")
        return None
    from mlx_platform.runtime.probe import probe_class

    paths = candidate.extra_paths + [str(p) for p in options.settings.plugin_dirs]
    probe = probe_class(class_path, timeout=options.settings.class_check_timeout, extra_paths=paths)
    if not probe.loadable:
        lines.add(CLASS, "fail", probe.error or "the class does not load")
        return None
    operations = sorted(probe.info.get("operations") or {})
    listing = ", ".join(operations) if operations else "none"
    lines.add(CLASS, "pass", f"{class_path}, in a throwaway process; operations: {listing}")
    return probe.info


def _platform(lines: _Lines, metadata: dict[str, Any] | None) -> None:
    """What activation refuses on this machine (supported_platforms, min_python_version,
    platform_api) and what the health check reports missing (python_requirements)."""
    if metadata is None:
        lines.add(PLATFORM, "skip", "the manifest is not a valid register request")
        return
    import platform
    import sys

    from mlx_platform.composition import rules

    problems = rules.platform_problems(metadata) + [
        f"python requirement {r} is not installed"
        for r in rules.missing_python_requirements(metadata)
    ]
    if problems:
        lines.add(PLATFORM, "fail", "; ".join(problems))
    else:
        lines.add(
            PLATFORM,
            "pass",
            f"runs here ({sys.platform}, Python {platform.python_version()}); "
            "its python_requirements are installed",
        )


def _configuration(lines: _Lines, req: Any, options: CheckOptions) -> dict[str, Any] | None:
    """Activation's check of the configuration: the schema's defaults, the values given."""
    from mlx_platform.core import config_schema

    schema = {k: v.model_dump(exclude_none=True) for k, v in req.configuration_schema.items()}
    full = config_schema.apply_defaults(schema, options.configuration)
    problems = config_schema.validate_configuration(schema, full)
    if problems:
        listing = "; ".join(f"{k} {v}" for k, v in problems.items())
        lines.add(
            CONFIGURATION, "fail", f"{listing} (give values with -c KEY=VALUE, as to activate)"
        )
        return None
    given = len(options.configuration)
    lines.add(CONFIGURATION, "pass", f"the schema's defaults and {given} given value(s) are valid")
    return dict(options.configuration)


def _run(
    lines: _Lines,
    manifest: dict[str, Any],
    configuration: dict[str, Any],
    info: dict[str, Any],
    candidate: Candidate,
    options: CheckOptions,
) -> None:
    """Start, health check and each operation, in a worker process started as activation
    starts one."""
    from mlx_platform.errors import MLXError
    from mlx_platform.testing.hosting import host_plugin

    try:
        hosted = host_plugin(
            manifest,
            configuration,
            extra_paths=list(candidate.extra_paths),
            settings=options.settings,
            health_check=False,
        )
    except MLXError as exc:
        lines.add(START, "fail", exc.message)
        lines.add(HEALTH, "skip", "the plugin did not start")
        lines.add(OPERATION, "skip", "the plugin did not start")
        return
    try:
        lines.add(
            START,
            "pass",
            f"loaded, configured and started in a worker process (pid {hosted.pid})",
        )
        _health(lines, hosted, options)
        _operations(lines, hosted, info, options)
    finally:
        hosted.stop()


def _health(lines: _Lines, hosted: HostedPlugin, options: CheckOptions) -> None:
    timeout = options.settings.health_timeout
    outcome = hosted.health(timeout)
    said = f": {outcome.message}" if outcome.message else ""
    if outcome.healthy:
        lines.add(HEALTH, "pass", f"healthy in {outcome.response_time_ms:.1f} ms{said}")
    else:
        hint = f" (MLX_HEALTH_TIMEOUT: {timeout:g} s)" if outcome.timed_out else ""
        lines.add(HEALTH, "fail", f"{outcome.message or 'unhealthy'}{hint}")


def _operations(
    lines: _Lines, hosted: HostedPlugin, info: dict[str, Any], options: CheckOptions
) -> None:
    """Each operation called through the worker's protocol, as an invocation is: with the
    arguments given for it (--args), or with none when every parameter has a default."""
    from mlx_platform.errors import MLXError

    operations: dict[str, Any] = info.get("operations") or {}
    if not operations:
        lines.add(OPERATION, "skip", "the class has no @operation")
    for name in sorted(operations):
        check = f"{OPERATION} {name}"
        given = options.arguments.get(name)
        required = list(operations[name].get("required") or [])
        if given is None and required:
            lines.add(
                check,
                "skip",
                f"needs arguments: {', '.join(required)} (give them with "
                f"--args {name}='{{\"{required[0]}\": ...}}')",
            )
            continue
        try:
            result = hosted.invoke(name, timeout=options.operation_timeout, **(given or {}))
        except MLXError as exc:
            lines.add(check, "fail", f"{exc.code}: {exc.message}")
            continue
        size = len(json.dumps(result))
        with_what = "the given arguments" if given else "no arguments (its defaults)"
        lines.add(check, "pass", f"called with {with_what}; its result is JSON ({size} bytes)")


def _composition(lines: _Lines, manifest: dict[str, Any] | None, options: CheckOptions) -> None:
    """With a service to ask: a dry-run registration (the service imports the class from its
    own environment and MLX_PLUGIN_PATH; conflicts with the active plugins and requirements
    no registered plugin meets), or, when the plugin is registered there already, the
    composition of it with every active plugin (POST /v1/plugins/validate-composition)."""
    if not options.service_url:
        for name in (SERVICE_LOADS, COMPOSITION):
            lines.add(name, "skip", "no service to ask: set MLX_API_URL (and MLX_API_TOKEN)")
        return
    if manifest is None:
        for name in (SERVICE_LOADS, COMPOSITION):
            lines.add(name, "skip", "the manifest is not a valid register request")
        return
    from mlx_platform.errors import MLXError, PluginAlreadyExistsError
    from mlx_platform.sdk import MLXClient, MLXConfigurationError

    url = options.service_url
    registered: str | None = None  # the service's words when the plugin is registered there
    composed: tuple[Status, str] = ("skip", "")
    try:
        with MLXClient(api_token=options.service_token, base_url=url) as client:
            try:
                result = client.plugins.register(manifest, dry_run=True)
            except PluginAlreadyExistsError as exc:
                registered = exc.message
                composed = _composition_of_registered(client, manifest)
    except (MLXError, MLXConfigurationError) as exc:
        said = f"{url}: {getattr(exc, 'message', None) or exc}"
        if registered is None:
            lines.add(SERVICE_LOADS, "fail", said)
        lines.add(COMPOSITION, "fail", said)
        return
    if registered is not None:
        lines.add(SERVICE_LOADS, "skip", f"registered there already: {registered}")
        lines.add(COMPOSITION, *composed)
        return
    checks = result.validation_results
    if checks.class_loadable:
        lines.add(SERVICE_LOADS, "pass", f"the service at {url} imports {manifest['class_path']}")
    else:
        lines.add(
            SERVICE_LOADS,
            "fail",
            f"the service at {url}: {checks.class_error} (install the package where the "
            "service runs, or put its folder in MLX_PLUGIN_PATH before the service starts)",
        )
    problems = [str(c.get("message") or c) for c in checks.conflicts] + [
        f"requires {m}, which no registered plugin satisfies" for m in checks.missing_dependencies
    ]
    if problems:
        lines.add(COMPOSITION, "fail", "; ".join(problems))
    else:
        lines.add(
            COMPOSITION,
            "pass",
            f"no conflict with the active plugins at {url}; its requirements are registered",
        )


def _composition_of_registered(client: Any, manifest: dict[str, Any]) -> tuple[Status, str]:
    """The registered plugin composed with every active plugin: validate-composition."""
    me = {"name": manifest["name"], "version": manifest["version"]}
    active = [
        {"name": p.name, "version": p.version}
        for p in client.plugins.list(status="active", limit=100)
        if (p.name, p.version) != (me["name"], me["version"])
    ]
    result = client.plugins.validate_composition([*active, me])
    if result.composition_valid:
        return "pass", f"valid with the {len(active)} active plugin(s) (as registered)"
    return "fail", "; ".join(c.message for c in result.conflicts)
