"""`mlx plugins ...`: the API from the command line, through the SDK.

The service is `MLX_API_URL` (default http://127.0.0.1:8000) and the token `MLX_API_TOKEN`
(or `--url` / `--token` before the command). Every command prints a table for people, or
with `--json` the answer as JSON; errors are one line on stderr and an exit code per kind
of failure (see `output.ExitCode`).

Defining the commands imports typer alone: the SDK, the wire models, rich and the output and
render helpers are imported by each command when it runs (annotations name them under
TYPE_CHECKING), so that `--help` does not load them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from mlx_platform.sdk import MLXClient
    from mlx_platform.wire import DiscoveryResult, PluginSort

plugins_app = typer.Typer(
    help="Manage plugins through the API: MLX_API_URL (default http://127.0.0.1:8000) "
    "and MLX_API_TOKEN.",
    no_args_is_help=True,
    rich_markup_mode=None,  # the plain help layout, as main.py's `app`
)

DISCOVERY_SOURCES = ("filesystem", "pypi", "git")

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the answer as JSON (errors too, on stdout)")
]
PluginIdArg = Annotated[str, typer.Argument(help="Plugin id, e.g. plugin_sqlite_source_001")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Run every check, change nothing")]


# `--url` and `--token`: options of `mlx plugins` (before its command) and of `mlx nodes`.
UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="MLX_API_URL", help="Service root URL", show_default=False),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MLX_API_TOKEN",
        help="API token (prefer the env var)",
        show_default=False,
    ),
]


@dataclass
class Target:
    """Where the service is and the token to show it (None: the SDK's defaults)."""

    url: str | None = None
    token: str | None = None


@plugins_app.callback()
def _target(ctx: typer.Context, url: UrlOption = None, token: TokenOption = None) -> None:
    ctx.obj = Target(url, token)


def api_token(target: Target) -> str | None:
    """The token of `target` as sent (None: the SDK's default), or InputError when it could
    not be sent (the token itself is never quoted)."""
    from mlx_platform.cli.output import InputError
    from mlx_platform.sdk._base import TOKEN_FORM  # what the SDK refuses too

    token = (target.token or "").strip() or None  # a line break read from a file: not part of it
    if token is not None and not TOKEN_FORM.fullmatch(token):
        raise InputError(
            "the API token (MLX_API_TOKEN or --token) is not one: a token is letters, digits "
            "and - . _ ~ + / = only (e.g. the content of MLX_HOME/admin.token, or what "
            "`mlx token create` prints)"
        )
    return token


@contextmanager
def connect(target: Target, as_json: bool) -> Iterator[MLXClient]:
    """A client for one command; any error becomes one line and its exit code."""
    from mlx_platform.cli import output
    from mlx_platform.cli.output import InputError
    from mlx_platform.errors import MLXConnectionError, MLXError
    from mlx_platform.sdk import MLXClient, MLXConfigurationError

    try:
        token = api_token(target)
    except InputError as exc:
        raise typer.Exit(output.print_error(exc, as_json=as_json)) from None
    try:
        with MLXClient(api_token=token, base_url=target.url) as client:
            yield client
    except (MLXError, MLXConnectionError, MLXConfigurationError, InputError) as exc:
        raise typer.Exit(output.print_error(exc, as_json=as_json)) from None


def _api(ctx: typer.Context, as_json: bool) -> AbstractContextManager[MLXClient]:
    """`connect` to the service the `mlx plugins` options name."""
    return connect(ctx.obj if isinstance(ctx.obj, Target) else Target(), as_json)


# ---------------------------------------------------------------- input helpers


def _value(text: str) -> Any:
    """`10` is a number, `true` a boolean, `{"a": 1}` an object; anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    from mlx_platform.cli.output import InputError

    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {item!r} is not KEY=VALUE")
        result[key.strip()] = _value(value)
    return result


def _read_document(path: str) -> dict[str, Any]:
    """A JSON or TOML file (by its suffix; `-` reads JSON from stdin) holding an object."""
    import tomllib

    from mlx_platform.cli.output import InputError

    try:
        if path == "-":
            text, suffix = sys.stdin.read(), ".json"
        else:
            file = Path(path)
            text, suffix = file.read_text(encoding="utf-8"), file.suffix.lower()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    data: Any
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            try:
                data = json.loads(text)
            except ValueError:
                data = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if suffix == ".toml" else "JSON" if suffix == ".json" else "JSON or TOML"
        raise InputError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} does not hold an object")
    return data


def _composition_entry(text: str) -> dict[str, str]:
    """`name`, `name@1.2.0` or `name>=1.0` (any PEP 440 specifier after the name)."""
    from mlx_platform.cli.output import InputError

    name, at, version = text.partition("@")
    if at:
        return {"name": name.strip(), "version": version.strip()}
    match = re.match(r"^\s*([^<>=!~\s]+)\s*([<>=!~].*)?$", text)
    if not match:
        raise InputError(f"{text!r} is not NAME, NAME@VERSION or NAME<specifier>")
    entry = {"name": match.group(1)}
    if match.group(2):
        entry["version"] = match.group(2).strip()
    return entry


def _merge_discoveries(results: list[DiscoveryResult]) -> DiscoveryResult:
    from mlx_platform.wire import DiscoveryResult, DiscoverySummary

    plugins = [p for r in results for p in r.discovered_plugins]
    return DiscoveryResult(
        discovered_plugins=plugins,
        discovery_summary=DiscoverySummary(
            total_discovered=sum(r.discovery_summary.total_discovered for r in results),
            compatible_plugins=sum(r.discovery_summary.compatible_plugins for r in results),
            incompatible_plugins=sum(r.discovery_summary.incompatible_plugins for r in results),
            auto_registered=sum(r.discovery_summary.auto_registered for r in results),
        ),
        errors=[e for r in results for e in r.errors],
    )


# ---------------------------------------------------------------- commands


@plugins_app.command("list")
def list_plugins(
    ctx: typer.Context,
    type_: Annotated[str | None, typer.Option("--type", help="e.g. data_source")] = None,
    status: Annotated[
        str | None, typer.Option(help="registered, active, inactive or error")
    ] = None,
    category: Annotated[str | None, typer.Option()] = None,
    search: Annotated[str | None, typer.Option(help="Part of a name or description")] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="Order (not with --search, which is ranked): created_at (the default), name "
            "or type; a leading '-' reverses it (--sort=-name)"
        ),
    ] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    limit: Annotated[int | None, typer.Option(help="Per page (server default 20, max 100)")] = None,
    every_page: Annotated[bool, typer.Option("--all", help="Every page, from --page on")] = False,
    as_json: JsonOption = False,
) -> None:
    """List plugins, one page at a time (or --all)."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        first = client.plugins.list(
            type=type_,
            status=status,
            category=category,
            search=search,
            sort=cast("PluginSort | None", sort),  # the service names the allowed values
            page=page,
            limit=limit,
        )
        last = first
        items = list(first.data)
        if every_page:
            for later in first.iter_pages():
                if later is not first:
                    items += later.data
                    last = later
    if as_json:
        output.print_json({"data": items, "pagination": last.pagination})
    else:
        render.render_plugin_list(items, first.pagination, every_page=every_page)


@plugins_app.command("get")
def get_plugin(ctx: typer.Context, plugin_id: PluginIdArg, as_json: JsonOption = False) -> None:
    """Show a plugin: metadata, configuration (secrets masked), schema, metrics."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        detail = client.plugins.get(plugin_id)
    output.emit(detail, as_json, render.render_plugin_detail)


@plugins_app.command("register")
def register_plugin(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Option(
            "-f",
            "--file",
            help="Manifest: mlx-plugin.toml or a JSON file with the register fields; - for stdin",
        ),
    ],
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Register a plugin from a manifest file (TOML or JSON)."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        manifest = _read_document(file)
        # mlx-plugin.toml may keep the fields under a [plugin] table.
        if isinstance(manifest.get("plugin"), dict):
            manifest = manifest["plugin"]
        result = client.plugins.register(manifest, dry_run=dry_run)
    output.emit(result, as_json, render.render_register)
    checks = result.validation_results
    if not checks.class_loadable:  # recorded (or would be) with status error: say so, and fail
        where = "" if file == "-" else f" -f {file}"
        verb = "would be registered" if result.dry_run else "is registered"
        output.err_console.print(
            f"error: {result.id} {verb} with status {result.status}: its class cannot be "
            f"loaded ({checks.class_error or 'no reason given'}); install the plugin's package "
            f"or correct class_path, then run mlx plugins register{where} again",
            style="red",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(output.ExitCode.PLUGIN_FAILED)


@plugins_app.command("delete")
def delete_plugin(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    force: Annotated[
        bool, typer.Option("--force", help="Deactivate it first if it is active")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Unregister a plugin (refused while it is active, unless --force)."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        result = client.plugins.delete(plugin_id, force=force)
    output.emit(result, as_json, render.render_delete)


@plugins_app.command("schema")
def configuration_schema(
    ctx: typer.Context, plugin_id: PluginIdArg, as_json: JsonOption = False
) -> None:
    """Print a plugin's configuration schema as standard JSON Schema (always JSON)."""
    from mlx_platform.cli import output

    with _api(ctx, as_json) as client:
        schema = client.plugins.configuration_schema(plugin_id)
    output.print_json(schema)


@plugins_app.command("activate")
def activate_plugin(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    config: Annotated[
        list[str] | None,
        typer.Option("-c", "--config", help="KEY=VALUE (repeat); VALUE is JSON or a string"),
    ] = None,
    config_file: Annotated[
        str | None, typer.Option("--config-file", help="JSON or TOML file of settings")
    ] = None,
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Activate without starting; the first call starts it")
    ] = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Activate a plugin, with configuration."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        configuration = _read_document(config_file) if config_file else {}
        configuration.update(_pairs(config, "--config"))
        result = client.plugins.activate(
            plugin_id,
            configuration=configuration,
            auto_start=False if no_start else None,
            dry_run=dry_run,
        )
    output.emit(result, as_json, render.render_activate)


@plugins_app.command("deactivate")
def deactivate_plugin(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    force: Annotated[bool, typer.Option(help="Stop at once, even with calls in flight")] = False,
    graceful_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for calls in flight")
    ] = 30,
    as_json: JsonOption = False,
) -> None:
    """Deactivate a plugin."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        result = client.plugins.deactivate(
            plugin_id, force=force, graceful_shutdown_timeout=graceful_timeout
        )
    output.emit(result, as_json, render.render_deactivate)


@plugins_app.command("configure")
def configure_plugin(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    settings: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE ...; VALUE is JSON or a string")
    ] = None,
    config_file: Annotated[
        str | None, typer.Option("--config-file", help="JSON or TOML file of settings")
    ] = None,
    allow_restart: Annotated[
        bool,
        typer.Option(
            help="Allow a restart when a changed field cannot be applied hot; alone, applies "
            "the changes that wait for one (pending restart)"
        ),
    ] = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change configuration fields of a plugin. A field that needs a restart (hot_reload
    false) changed without --allow-restart is stored and waits: `pending restart`."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        configuration = _read_document(config_file) if config_file else {}
        configuration.update(_pairs(settings, "setting"))
        if not configuration and not allow_restart:
            raise output.InputError(
                "nothing to change: give KEY=VALUE or --config-file (or --allow-restart alone "
                "to apply what waits for a restart)"
            )
        result = client.plugins.update_configuration(
            plugin_id, configuration, restart_required=allow_restart, dry_run=dry_run
        )
    output.emit(result, as_json, render.render_configuration_update)


@plugins_app.command("health")
def plugin_health(ctx: typer.Context, plugin_id: PluginIdArg, as_json: JsonOption = False) -> None:
    """Run a plugin's health check now."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        report = client.plugins.health_check(plugin_id)
    output.emit(report, as_json, render.render_health)


@plugins_app.command("metrics")
def plugin_metrics(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    start: Annotated[str | None, typer.Option(help="ISO 8601; default 24 h before --end")] = None,
    end: Annotated[str | None, typer.Option(help="ISO 8601; default now")] = None,
    granularity: Annotated[
        str | None, typer.Option(help="minute, hour or day (default hour)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recorded call metrics of a plugin."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        report = client.plugins.metrics(
            plugin_id, start_time=start, end_time=end, granularity=granularity
        )
    output.emit(report, as_json, render.render_metrics)


@plugins_app.command("discover")
def discover_plugins(
    ctx: typer.Context,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="filesystem, pypi or git (repeat); default: all three"),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Include this namespace package")
    ] = None,
    auto_register: Annotated[
        bool, typer.Option(help="Register the compatible plugins found (admin)")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Find plugins without running them: one scan per source, then one merged table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from mlx_platform.cli import output, render

    sources = list(dict.fromkeys(source or DISCOVERY_SOURCES))
    results: list[DiscoveryResult] = []
    with _api(ctx, as_json) as client:

        def scan(name: str) -> None:
            results.append(
                client.plugins.discover(
                    sources=[name], include_namespace=namespace, auto_register=auto_register
                )
            )

        if as_json:
            for name in sources:
                scan(name)
        else:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=output.err_console,
            ) as progress:
                task = progress.add_task("discovering", total=len(sources))
                for name in sources:
                    progress.update(task, description=f"scanning {name}")
                    scan(name)
                    progress.advance(task)
                progress.update(task, description="scanned " + ", ".join(sources))
    merged = _merge_discoveries(results)
    output.emit(merged, as_json, render.render_discovery)


@plugins_app.command("validate")
def validate_composition(
    ctx: typer.Context,
    plugins: Annotated[
        list[str], typer.Argument(help="NAME, NAME@VERSION or NAME<specifier> (e.g. mlflow>=2)")
    ],
    as_json: JsonOption = False,
) -> None:
    """Check that plugins can run together; exit code 4 when they cannot."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        result = client.plugins.validate_composition([_composition_entry(p) for p in plugins])
    output.emit(result, as_json, render.render_composition)
    if not result.composition_valid:
        raise typer.Exit(output.ExitCode.CONFLICT)


@plugins_app.command("invoke")
def invoke_plugin(
    ctx: typer.Context,
    plugin_id: PluginIdArg,
    operation: Annotated[str, typer.Argument(help="Name of an @operation of the plugin")],
    arguments: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE ...; VALUE is JSON or a string")
    ] = None,
    args_json: Annotated[
        str | None, typer.Option("--args", help='All arguments as a JSON object: {"a": 1}')
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds the operation may take")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Call an operation of an active plugin and print its result."""
    from mlx_platform.cli import output, render

    with _api(ctx, as_json) as client:
        call_args: dict[str, Any] = {}
        if args_json is not None:
            parsed = _value(args_json)
            if not isinstance(parsed, dict):
                raise output.InputError("--args is not a JSON object")
            call_args.update(parsed)
        call_args.update(_pairs(arguments, "argument"))
        result = client.plugins.invoke(plugin_id, operation, call_args, timeout=timeout)
    output.emit(result, as_json, render.render_invoke)


# ---------------------------------------------------------------- plugin authors


@plugins_app.command("new")
def new_plugin(
    name: Annotated[str, typer.Argument(help="The plugin's name, e.g. warehouse")],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="data_source, ml_platform, experiment_tracker, feature_store, ...",
            show_default=False,
        ),
    ],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to write it (must not exist, or be empty); default ./mlx-plugin-NAME",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a new plugin package: pyproject.toml with the entry point, mlx-plugin.toml,
    a Plugin subclass with one @operation, tests on mlx-platform's pytest fixtures, a README.
    Runs nothing of the service."""
    from mlx_platform.cli.output import ExitCode
    from mlx_platform.cli.scaffold import ScaffoldError, write_package

    try:
        target, names = write_package(name, type_, directory)
    except ScaffoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.INVALID_INPUT) from None
    typer.echo(f"wrote {target}: the {names.plugin} plugin ({names.type}), package {names.package}")
    typer.echo("next:")
    typer.echo(f"  cd {target}")
    typer.echo('  pip install -e ".[test]"   # the plugin, and what its tests need')
    typer.echo("  pytest                     # its tests: in a worker process, in a live service")
    typer.echo("  mlx plugins check .        # every check registration and activation run")


@plugins_app.command("check")
def check_plugin(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="A plugin folder (or a package in the src layout), its mlx-plugin.toml, or "
            "the name of an installed distribution"
        ),
    ],
    config: Annotated[
        list[str] | None,
        typer.Option("-c", "--config", help="KEY=VALUE (repeat), as to activate"),
    ] = None,
    args: Annotated[
        list[str] | None,
        typer.Option(
            "--args",
            help="OPERATION=JSON object (repeat): the arguments to call OPERATION with",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds each operation may take")
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Run every check registration and activation would run, before registering: manifest,
    configuration schema and its defaults, class import (a throwaway process), platform,
    configuration, start, health check and each operation (a worker process, as the service
    runs it), and, when MLX_API_URL (or --url) names a service, the service's own import of
    the class and the composition with its active plugins. One line per check; exit 1 when
    any fails."""
    from mlx_platform.cli import output
    from mlx_platform.cli.extras import needs_server

    # what the checks run (the service's parts), imported now: a missing extra is one line
    with needs_server("mlx plugins check"):
        import mlx_platform.testing.hosting  # noqa: F401
        from mlx_platform.settings import Settings, settings_problems
        from mlx_platform.testing.checks import CheckOptions, check
    from pydantic import ValidationError as SettingsError

    where = ctx.obj if isinstance(ctx.obj, Target) else Target()
    try:
        settings = Settings()
    except SettingsError as exc:  # the same settings the service would start with
        typer.echo(f"error: invalid settings: {settings_problems(exc)}", err=True)
        raise typer.Exit(output.ExitCode.INVALID_INPUT) from None
    try:
        arguments: dict[str, dict[str, Any]] = {}
        for item in args or []:
            operation, sep, text = item.partition("=")
            parsed = _value(text) if sep else None
            if not operation.strip() or not isinstance(parsed, dict):
                raise output.InputError(f"--args {item!r} is not OPERATION=JSON object")
            arguments[operation.strip()] = parsed
        options = CheckOptions(
            settings=settings,
            configuration=_pairs(config, "--config"),
            arguments=arguments,
            operation_timeout=timeout,
            service_url=where.url,
            service_token=api_token(where),
        )
    except output.InputError as exc:
        raise typer.Exit(output.print_error(exc, as_json=as_json)) from None
    results = check(target, options)
    if as_json:
        output.print_json([r.as_dict() for r in results])
    else:
        several = len({r.plugin for r in results}) > 1
        width = max(len(r.check) for r in results)
        for r in results:
            who = f"{r.plugin}: " if several and r.plugin else ""
            typer.echo(f"{r.status:<4}  {who}{r.check:<{width}}  {r.reason}")
        counts = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "skip")}
        typer.echo(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    if any(r.status == "fail" for r in results):
        raise typer.Exit(output.ExitCode.ERROR)
