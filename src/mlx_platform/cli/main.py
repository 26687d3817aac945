"""`mlx`: serve the API, mint tokens, list the replicas, read the audit trail.

Defining the commands imports typer alone (and cli/plugins.py, which does the same): what a
command needs (the SDK, the server, output.py and render.py, rich) it imports when it runs, so
that `mlx --help` costs typer and its help formatting, not the SDK (bench/bench_cli.py).
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from typing import Annotated, Any


def _needs() -> SystemExit:
    """`mlx` without typer or rich: one line naming every extra the command given needs (a
    command of the service's, `mlx serve`, needs the server extra too) and what is missing."""
    from mlx_platform.cli.extras import SERVER_COMMANDS, install_line

    words = sys.argv[1:3]
    server = bool(words) and (words[0] in SERVER_COMMANDS or words == ["plugins", "check"])
    command = "mlx " + " ".join(words if words[:1] in (["plugins"], ["token"]) else words[:1])
    line = install_line(command if server else "the command line", cli=not server)
    return SystemExit(f"mlx: {line}")


try:
    import typer

    from mlx_platform.cli.plugins import (
        JsonOption,
        Target,
        TokenOption,
        UrlOption,
        connect,
        plugins_app,
    )
except ModuleNotFoundError as exc:  # the command line is an extra: say how to get it
    if exc.name not in ("typer", "rich", "click"):
        raise
    raise _needs() from None
# rich is imported by the commands when they run (and by typer for help): missing, it is said
# now, as when it was imported here.
if find_spec("rich") is None:
    raise _needs()

# Help in click's plain layout (rich_markup_mode=None), not typer's rich panels: those show a
# `<bool>` type after every flag and read `[...]` in a help text as markup; the plain layout
# names the environment variable of each option that has one.
app = typer.Typer(
    help="mlx-platform: a plugin manager for ML platforms.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from mlx_platform import __version__

        print(f"mlx-platform {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit",
        ),
    ] = False,
) -> None:
    """mlx-platform: a plugin manager for ML platforms."""


token_app = typer.Typer(help="API tokens.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(token_app, name="token")
app.add_typer(plugins_app, name="plugins")


def _settings(**overrides: object) -> object:
    """The settings, or exit 2 with every refused one named (before anything is done)."""
    from pydantic import ValidationError as PydanticValidationError

    from mlx_platform.settings import Settings, settings_problems

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except PydanticValidationError as exc:
        typer.echo(f"error: invalid settings: {settings_problems(exc)}", err=True)
        raise typer.Exit(2) from None


def ensure_admin_token(settings: object) -> tuple[str, bool]:
    """The admin token kept in MLX_HOME (0600): made anew when missing or no longer valid."""
    from mlx_platform.errors import MLXError
    from mlx_platform.server.auth import create_token, verify_token
    from mlx_platform.settings import Settings

    assert isinstance(settings, Settings)
    path = settings.ensure_home() / "admin.token"
    secret = settings.resolved_jwt_secret
    if path.exists():
        token = path.read_text().strip()
        try:
            verify_token(secret, token)
            return token, False
        except MLXError:
            path.unlink()
    token = create_token(secret, "admin", ["plugins:admin"], settings.admin_token_ttl)
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(envvar="MLX_HOST", help="Interface to listen on (default 127.0.0.1)"),
    ] = None,
    port: Annotated[int | None, typer.Option(envvar="MLX_PORT", help="Port (default 8000)")] = None,
) -> None:
    """Apply migrations, register the example plugins on first start, serve the API.

    Every other setting is an MLX_* environment variable (README, "Settings"): MLX_HOME
    (data, secrets, the admin token; default ~/.mlx-platform), MLX_DATABASE_URL, ..."""
    import gc

    from mlx_platform.cli.extras import install_line, needs_server

    # No collections while the service loads: imports only add objects that live as long as
    # the process, and the collector walked that growing heap ~350 times (~0.25 s of a ~1.2 s
    # start). The lifespan freezes what was loaded and enables the collector when ready
    # (server/app.py; docs/decisions.md, "Start-up").
    gc.disable()
    # every module of the server extra looked for now (the imports below say the same line
    # for one that is found but fails to import)
    missing = install_line("mlx serve", cli=False, quick=True)
    if missing:
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(1)
    with needs_server("mlx serve"):
        import uvicorn

        from mlx_platform.cli import startup
        from mlx_platform.server.app import create_app
        from mlx_platform.server.limits import SERVER_HEAD_LIMIT
        from mlx_platform.settings import Settings

    settings = _settings(host=host, port=port)
    assert isinstance(settings, Settings)
    # The port is taken before anything is written (home, token, migrations, example plugins),
    # and held: a busy port stops here, and nothing can take it in between. So is the
    # database reached, the home made, and its secret key read: what would otherwise fail
    # the start after the admin token was printed, in a traceback.
    listener = _listen(settings.host, settings.port)
    try:
        startup.check_database(settings, "nothing was started or changed")
        startup.make_home(settings, "nothing was started or changed")
        startup.check_secret_key(settings, "nothing was started")
    except typer.Exit:
        listener.close()
        raise
    token, new = ensure_admin_token(settings)
    if new:
        print("=" * 72)
        print("mlx-platform admin token (scope plugins:admin), also kept in")
        print(f"  {settings.admin_token_path}")
        print()
        print(token)
        print()
        print(f'  export TOKEN="$(cat {settings.admin_token_path})"')
        print(
            f'  curl -H "Authorization: Bearer $TOKEN" http://{settings.host}:{settings.port}/v1/plugins'
        )
        print("=" * 72, flush=True)
    else:
        print(f"admin token: {settings.admin_token_path}", flush=True)
    print(
        f"mlx-platform: http://{settings.host}:{settings.port} (data in {settings.home})",
        flush=True,
    )
    # uvicorn.run, on the socket bound above
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_graceful_shutdown=30,
            **_http_options(SERVER_HEAD_LIMIT),
        )
    )
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's exit code for a failed start


def _listen(host: str, port: int) -> Any:
    """A TCP socket bound to host:port as uvicorn binds one (SO_REUSEADDR, IPv6 for a host
    with a colon), for the server to listen on; a port in use ends `mlx serve` in one line."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"port {port} is in use on {host} (another mlx serve?): stop what listens "
                "there, or choose another with --port or MLX_PORT"
            )
        else:
            reason = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        typer.echo(f"error: {reason}; nothing was started or changed", err=True)
        raise typer.Exit(1) from None
    return sock


def _http_options(head_limit: int) -> dict[str, Any]:
    """uvicorn's HTTP protocol: httptools with a bound on heads (server/http_protocol.py)
    when installed (the `server` extra installs it, and uvloop), else h11 with the same
    bound. Either way heads up to `head_limit` reach the service, which refuses those over
    MLX_MAX_HEADER_BYTES with 431 in the envelope."""
    try:
        from mlx_platform.server.http_protocol import BoundedHttpToolsProtocol
    except ImportError:  # httptools is not installed
        return {"http": "h11", "h11_max_incomplete_event_size": head_limit}
    return {"http": BoundedHttpToolsProtocol}


@token_app.command("create")
def token_create(
    subject: Annotated[str, typer.Option("--subject", help="Who the token is for")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="plugins:read | plugins:write | plugins:admin (repeat)"),
    ],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds")] = 86400,
    new_secret: Annotated[
        bool,
        typer.Option(
            "--new-secret",
            help="When MLX_HOME holds no server secret, create one there (a service started "
            "on that home later accepts the token)",
        ),
    ] = False,
) -> None:
    """Print a token signed with the server's secret (MLX_JWT_SECRET, else the one kept in
    MLX_HOME), alone on stdout. Refused when there is none, unless --new-secret."""
    from mlx_platform.cli.extras import needs_server

    with needs_server("mlx token create"):
        from mlx_platform.cli import startup
        from mlx_platform.server.auth import create_token
        from mlx_platform.settings import MAX_TOKEN_TTL, Settings

    if ttl > MAX_TOKEN_TTL:  # as MLX_ADMIN_TOKEN_TTL: an `exp` every reader can hold
        typer.echo(f"error: --ttl must be at most {MAX_TOKEN_TTL} seconds (100 years)", err=True)
        raise typer.Exit(2)
    settings = _settings()
    assert isinstance(settings, Settings)
    if not settings.has_jwt_secret:
        if not new_secret:
            typer.echo(
                f"error: no server secret in MLX_HOME {settings.home} (no "
                f"{settings.jwt_secret_path.name}, no MLX_JWT_SECRET): a token signed with a "
                "new one would be refused by a service on another home; set MLX_HOME to the "
                "service's, or pass --new-secret to create one here",
                err=True,
            )
            raise typer.Exit(2)
        startup.make_home(settings, "no token was made")
        settings.resolved_jwt_secret  # noqa: B018 - made and kept in MLX_HOME (0600)
        typer.echo(f"created a new server secret: {settings.jwt_secret_path}", err=True)
    try:
        token = create_token(settings.resolved_jwt_secret, subject, list(scope), ttl)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(token + "\n")


@app.command("migrate")
def migrate() -> None:
    """Apply the database migrations (serve does this too)."""
    from mlx_platform.cli.extras import needs_server

    with needs_server("mlx migrate"):
        import alembic.command  # noqa: F401 - what migrating runs

        from mlx_platform.cli import startup
        from mlx_platform.settings import Settings
        from mlx_platform.storage import Database
        from mlx_platform.storage.availability import reason_of

    settings = _settings()
    assert isinstance(settings, Settings)
    startup.check_database(settings, "nothing was migrated")
    startup.make_home(settings, "nothing was migrated")
    db = Database(settings.effective_database_url)
    try:
        db.migrate()
    except Exception as exc:  # noqa: BLE001 - the database's own reason, in one line
        raise startup.refuse(f"migrating the database failed: {reason_of(exc)}", 1) from None
    finally:
        db.dispose()
    typer.echo("database is at the newest migration")


@app.command("nodes")
def nodes(url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """List the service's replicas (scope plugins:admin): heartbeat and plugins each runs."""
    from mlx_platform.cli import output, render

    with connect(Target(url, token), as_json) as client:
        found = client.nodes.list()
    output.emit(found, as_json, render.render_nodes)


AUDIT_ACTIONS = "register, activate, deactivate, configure, delete or auto_register"


@app.command("audit")
def audit(
    plugin: Annotated[
        str | None, typer.Option("--plugin", help="Only this plugin id", show_default=False)
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Only this token subject (`service`: the service itself)"),
    ] = None,
    action: Annotated[str | None, typer.Option(help=AUDIT_ACTIONS)] = None,
    outcome: Annotated[str | None, typer.Option(help="success or failure")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 time, inclusive, e.g. 2026-01-31T08:00:00Z")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time, exclusive")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Per page")] = 50,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit trail (scope plugins:admin): every state change, refused ones too, newest
    first, with who made it, when, its outcome and the request id."""
    from mlx_platform.cli import output, render

    with connect(Target(url, token), as_json) as client:
        found = client.audit.list(
            plugin_id=plugin,
            actor=actor,
            action=action,
            outcome=outcome,
            since=since,
            until=until,
            page=page,
            limit=limit,
        )
    if as_json:  # the API's answer as it came
        output.print_json({"success": True, "data": found.data, "pagination": found.pagination})
    else:
        render.render_audit(found.data, found.pagination)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
