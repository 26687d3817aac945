"""What `mlx serve` and `mlx migrate` check before they change anything: that the service could
run on MLX_DATABASE_URL and that the database answers, that MLX_HOME can be made and written,
and that the Fernet key kept there is one. Each refusal is one line on stderr and an exit
code (2: a setting the service cannot run with, as `_settings` in main.py; 1: something
outside the command that failed, as a port in use), never a traceback.

The database URL is checked here, not by `Settings`: discovery reads the settings and must not
import SQLAlchemy (pyproject.toml, the import contracts)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mlx_platform.settings import Settings

# The databases the service runs on (its migrations, locks and change notifications are
# written for these two).
DATABASE_BACKENDS = ("postgresql", "sqlite")
DATABASE_EXAMPLES = (
    "e.g. postgresql+psycopg://user:password@host:5432/mlx or sqlite:////path/mlx.db"
)


def refuse(reason: str, code: int) -> typer.Exit:
    typer.echo(f"error: {reason}", err=True)
    return typer.Exit(code)


def database_url_problem(text: str, home: Path) -> str | None:
    """Why the service could not run on the database URL `text`, as far as can be told without
    connecting (None: it could). The URL itself is never quoted: it may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return f"is not a database URL ({DATABASE_EXAMPLES})"
    backend = url.get_backend_name()
    if backend not in DATABASE_BACKENDS:
        return (
            f"names the database '{backend}': the service runs on PostgreSQL or SQLite "
            f"({DATABASE_EXAMPLES})"
        )
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        driver = url.get_driver_name()
        return f"names the driver '{driver}', which SQLAlchemy does not know ({DATABASE_EXAMPLES})"
    except ImportError as exc:
        return (
            f"needs the driver '{url.get_driver_name()}', which is not installed (no module "
            f"{exc.name}): {DATABASE_EXAMPLES}"
        )
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            # every connection would see a database of its own, and nothing would be kept
            return "is an in-memory SQLite database: name a file, e.g. sqlite:////path/mlx.db"
        folder = Path(os.path.abspath(database)).parent
        if not os.path.isdir(folder) and folder != home:  # MLX_HOME is made at start
            return f"the folder of its SQLite file, {folder}, does not exist"
    return None


def check_database(settings: Settings, unchanged: str) -> None:
    """Exit 2 when the service could not run on MLX_DATABASE_URL; exit 1 when that database
    does not answer. Nothing is written: a SQLite file (MLX_HOME's, or one the setting
    names) is not opened, a missing one would be made; its folder was looked at above."""
    if not settings.database_url:
        return  # the SQLite file in MLX_HOME
    problem = database_url_problem(settings.database_url, settings.home)
    if problem:
        raise refuse(f"invalid settings: MLX_DATABASE_URL: {problem}", 2)
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from mlx_platform.storage.availability import reason_of
    from mlx_platform.storage.db import CONNECT_TIMEOUT_S

    # An engine of its own, not storage.Database: that one logs an outage as the service
    # would, and this is one line. The same connect timeout as the service's.
    timeout = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT_S}
    engine = create_engine(url, poolclass=NullPool, connect_args=timeout)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - whatever the driver says, said in one line
        shown = url.render_as_string(hide_password=True)
        raise refuse(
            f"the database of MLX_DATABASE_URL ({shown}) cannot be reached: "
            f"{reason_of(exc)}; {unchanged}",
            1,
        ) from None
    finally:
        engine.dispose()


def make_home(settings: Settings, unchanged: str) -> None:
    """MLX_HOME made (0700) when missing; exit 1 when it cannot be, or cannot be written."""
    try:
        home = settings.ensure_home()
    except OSError as exc:
        raise refuse(
            f"MLX_HOME {settings.home} cannot be made: {exc.strerror or exc}; {unchanged}", 1
        ) from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise refuse(f"MLX_HOME {home} cannot be written to; {unchanged}", 1)


def check_secret_key(settings: Settings, unchanged: str) -> None:
    """Exit 1 when the Fernet key kept in MLX_HOME is not one (made there when missing)."""
    try:
        settings.resolved_secret_key  # noqa: B018 - read (or made) and checked
    except ValueError as exc:
        raise refuse(f"{exc}; {unchanged}", 1) from None
