"""`mlx serve` whose start fails for a reason its checks before the start cannot see (a
SQLite file that is no database, a schema at a migration this version does not have, a
database gone between the check and the start, a step after the migration that fails) ends
in one log line naming the step and the reason, never a traceback, never a password, never
the outage line of a service that answers 503 meanwhile, with uvicorn's exit code for a
failed start (3).

Each case is made for real: a file of garbage, a throwaway PostgreSQL database on
127.0.0.1:5432, a TCP relay to PostgreSQL that answers one connection (the check's) and is
gone for the start's."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg

from tests.conftest import clean_env, forked_mlx, mlx_cli, postgres_url_for
from tests.e2e.test_cli_bad_settings import SERVE, TRACEBACK_MARKS

PASSWORD = "hunter2-password"  # PostgreSQL trusts 127.0.0.1: accepted, and never to be shown
FAILED_START = 3  # uvicorn's exit code when the application's start fails


def serve(home: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    return mlx_cli(*SERVE, env=clean_env(MLX_HOME=str(home), **variables), check=False)


def the_failure(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line that says why the start failed (after uvicorn's own lines); no traceback."""
    both = proc.stdout + proc.stderr
    assert proc.returncode == FAILED_START, both
    assert not [mark for mark in TRACEBACK_MARKS if mark in both], both
    assert PASSWORD not in both
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 2, proc.stderr
    ours, uvicorns = errors
    assert uvicorns.endswith("ERROR uvicorn.error: Application startup failed. Exiting."), errors
    assert " ERROR mlx_platform.server: mlx-platform could not start: " in ours, ours
    # every other line is one of uvicorn's or the service's log lines, one per record
    assert all(line[:4].isdigit() for line in proc.stderr.strip().splitlines()), proc.stderr
    # nor the outage line of a running service ("... answer 503 until it is back"): this
    # one stops, and its failure line says what the database did
    assert " WARNING mlx_platform.storage: " not in proc.stderr, proc.stderr
    assert "until it is back" not in proc.stderr, proc.stderr
    return ours


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_a_sqlite_file_that_is_no_database(tmp_path: Path) -> None:
    garbage = tmp_path / "mlx.db"
    garbage.write_bytes(b"these bytes are no SQLite database, " * 200)
    line = the_failure(serve(tmp_path / "home", MLX_DATABASE_URL=f"sqlite:///{garbage}"))
    assert "migrating the database failed: the database cannot be reached or read" in line
    assert "file is not a database" in line and f"database: sqlite:///{garbage}" in line, line


def test_a_schema_at_a_migration_this_version_does_not_have(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = postgres_url_for(home, 0)  # a database of its own, dropped when the session ends
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_a_newer_version')")
    line = the_failure(serve(home, MLX_DATABASE_URL=with_password(url)))
    assert "migrating the database failed: CommandError: Can't locate revision" in line, line
    assert "9999_from_a_newer_version" in line and "migrated by a newer version?" in line, line
    shown = url.replace("postgres@", "postgres:***@", 1)
    assert line.endswith(f"; database: {shown}"), line


@contextmanager
def postgres_answering_once() -> Iterator[int]:
    """A port on 127.0.0.1 relayed to PostgreSQL for its first connection only: then it is
    closed, and every later connection is refused (the database gone after the check)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done: list[socket.socket] = []

    def pipe(source: socket.socket, target: socket.socket) -> None:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)

    def relay_one() -> None:
        client, _ = listener.accept()
        listener.close()
        upstream = socket.create_connection(("127.0.0.1", 5432))
        done.extend((client, upstream))
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()

    relay = threading.Thread(target=relay_one, daemon=True)
    relay.start()
    try:
        yield port
    finally:
        relay.join(timeout=30)
        for sock in [listener, *done]:
            sock.close()


def test_a_database_gone_between_the_check_and_the_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = with_password(postgres_url_for(home, 0))
    with postgres_answering_once() as port:
        relayed = url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        line = the_failure(serve(home, MLX_DATABASE_URL=relayed))
    assert "migrating the database failed: the database cannot be reached or read" in line
    assert "OperationalError: connection failed" in line, line
    assert line.endswith(
        f"; database: postgresql+psycopg://postgres:***@127.0.0.1:{port}/" + url.rsplit("/", 1)[1]
    ), line


def test_a_step_after_the_migration_that_fails_stops_what_it_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(MLX_HOME=str(home))
    assert forked_mlx(["migrate"], env).returncode == 0
    with closing(sqlite3.connect(home / "mlx.db")) as conn, conn:
        conn.execute("DROP TABLE plugins")  # at the newest migration, but the table is gone
    line = the_failure(serve(home))
    assert "registering the example plugins failed: OperationalError: no such table: plugins" in (
        line
    ), line
    assert f"database: sqlite:///{home / 'mlx.db'}" in line, line
    with closing(sqlite3.connect(home / "mlx.db")) as conn:
        # the replica had joined and begun its heartbeat: it left again
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (0,)
