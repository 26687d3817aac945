"""PostgreSQL's pooled connections are pinged only after they sat idle (storage/db.py,
`_ping_when_idle`, issue 13), on the real server: a connection killed while idle is replaced
without a failed read; a connection in steady use is not pinged; one killed while in steady
use fails one read, as a disconnect, and the next read connects anew.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust): fails when it is not there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mlx_platform.storage import db as db_module
from mlx_platform.storage.db import Database
from tests.conftest import _pg_admin_connect, postgres_url_for


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(postgres_url_for(tmp_path, 0))
    yield db
    db.dispose()


def _backend_pid(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    with _pg_admin_connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)  # the backend gone before the next use


def test_a_connection_killed_while_idle_is_replaced_without_a_failed_read(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.1)
    first = _backend_pid(database)
    _terminate(first)
    time.sleep(0.2)  # idle for longer than PING_AFTER_IDLE_S
    assert _backend_pid(database) != first  # pinged, found dead, replaced: no error


def test_a_connection_in_steady_use_is_not_pinged_and_a_dead_one_fails_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 3600.0)
    first = _backend_pid(database)
    pids = {_backend_pid(database) for _ in range(20)}
    assert pids == {first}  # one pooled connection, reused
    _terminate(first)
    # no ping within the idle time: the read meets the dead connection and fails as a
    # disconnect, which invalidates the pool (SQLAlchemy's optimistic disconnect handling)
    with pytest.raises(DBAPIError) as failed:
        _backend_pid(database)
    assert failed.value.connection_invalidated
    assert _backend_pid(database) != first  # the next read connects anew


def test_a_ping_only_after_an_idle_spell(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLAlchemy's `pool_pre_ping` every checkout made a round trip."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.3)
    pid = _backend_pid(database)
    pinged: list[int] = []
    original = database.engine.dialect.do_ping

    def counting_ping(dbapi_conn):  # type: ignore[no-untyped-def]
        pinged.append(1)
        return original(dbapi_conn)

    monkeypatch.setattr(database.engine.dialect, "do_ping", counting_ping)
    for _ in range(10):
        assert _backend_pid(database) == pid
    assert pinged == []  # in steady use: never pinged
    time.sleep(0.4)
    assert _backend_pid(database) == pid
    assert pinged == [1]  # after an idle spell: pinged once, alive, kept
