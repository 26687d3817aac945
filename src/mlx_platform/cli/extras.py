"""What `mlx` needs of the package's extras, and the one line that says what to install.

`pip install mlx-platform` gives the SDK; the `cli` extra adds `mlx` (typer, rich); the
`server` extra (which includes `cli`) adds what `mlx serve`, `mlx migrate`, `mlx token create`
and `mlx plugins check` run. When a command finds a module missing, every module of the
extras it needs is tried, so that the line names all that is missing at once, not one per
attempt. Standard library only: this runs where typer itself may be missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec

# The modules of each extra that the commands import (tests/e2e/test_cli_extras.py checks
# these against the extras' distributions). Not listed: psycopg (PostgreSQL only), uvloop and
# httptools (uvicorn runs without them: asyncio and h11).
CLI_MODULES = ("typer", "rich")
SERVER_MODULES = (
    "fastapi",
    "fastapi_offline",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "pydantic_settings",
    "jwt",
    "cryptography",
    "psutil",
    "jsonschema",
    "packaging",
    "prometheus_client",
    "orjson",
    "resolvelib",
)
# `mlx` commands that run the service's own parts (the server extra)
SERVER_COMMANDS = ("serve", "migrate", "token")


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported (each is imported: what is found on
    the path but fails to import counts as missing too)."""
    absent = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(name)
    return absent


def install_line(command: str, *, cli: bool, quick: bool = False) -> str | None:
    """The one line saying what `command` (`mlx serve`, ...) lacks and how to get it, or None
    when nothing of the extras it needs is missing. `cli`: it needs the cli extra only.

    `quick`: None as soon as every module is found on the path (`find_spec`, nothing
    imported), for a command about to import them under `needs_server`, which says the
    same line if one of them then fails to import. Importing every module here to find
    nothing missing cost `mlx serve` ~0.2 s (Alembic, which a start at the newest migration
    never loads)."""
    if quick and all(find_spec(m) for m in CLI_MODULES + (() if cli else SERVER_MODULES)):
        return None
    absent_cli = missing(CLI_MODULES)
    absent_server = [] if cli else missing(SERVER_MODULES)
    if not absent_cli and not absent_server:
        return None
    extras = [name for name, absent in (("cli", absent_cli), ("server", absent_server)) if absent]
    needs = " and ".join(extras) + (" extras" if len(extras) > 1 else " extra")
    install = "cli" if cli else "server"
    also = " (it includes the cli)" if not cli and absent_cli else ""
    if cli:
        also = ' (or "mlx-platform[server]" for the service too)'
    return (
        f'{command} needs the {needs}: pip install "mlx-platform[{install}]"{also}; '
        f"missing: {', '.join(absent_cli + absent_server)}"
    )


@contextmanager
def needs_server(command: str) -> Iterator[None]:
    """Around the imports of a command that runs the service's parts: a module of the server
    extra missing ends it in one line naming the extra and every module missing (exit 1), not
    a traceback; an ImportError with nothing of the extras missing is raised as it is."""
    try:
        yield
    except ImportError:
        line = install_line(command, cli=False)
        if line is None:
            raise
        import typer

        typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
