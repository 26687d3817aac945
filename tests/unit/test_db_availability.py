"""storage.availability and Database.readiness on real SQLite files: which errors mean "the
database is away", the two log lines of an outage, the readiness probe's cache."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import SQLAlchemyError

from mlx_platform.storage import db as db_module
from mlx_platform.storage.availability import Availability, classify, reason_of
from mlx_platform.storage.db import Database


def _error(run) -> SQLAlchemyError:  # type: ignore[no-untyped-def]
    with pytest.raises(SQLAlchemyError) as info:
        run()
    return info.value


def test_a_file_that_cannot_be_opened_is_an_outage(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")

    def read() -> None:
        with db.read() as session:
            session.execute(text("SELECT 1"))

    exc = _error(read)
    assert classify(exc) == "outage"
    assert db.availability.is_down  # noticed by the engine's own error event
    assert reason_of(exc).startswith("OperationalError: unable to open database file")
    db.dispose()


def test_a_locked_file_is_busy_and_a_bad_statement_is_neither(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    assert classify(locked.value) == "busy"
    assert classify(sa_exc.OperationalError("INSERT", {}, locked.value)) == "busy"
    holder.execute("ROLLBACK")
    holder.close()
    other.close()

    db = Database(f"sqlite:///{path}")

    def bad() -> None:
        with db.read() as session:
            session.execute(text("SELECT * FROM no_such_table"))

    assert classify(_error(bad)) is None  # a bug: answered 500, not 503
    assert not db.availability.is_down
    db.dispose()


def test_an_outage_logs_one_line_when_it_starts_and_one_when_it_ends(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="mlx_platform.storage")
    a = Availability()
    a.serving()
    a.up()  # not down: nothing to say
    for _ in range(50):
        a.down("OperationalError: connection refused")
    assert a.is_down and a.reason == "OperationalError: connection refused"
    for _ in range(50):
        a.up()
    assert not a.is_down
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == logging.WARNING and "database unreachable" in lines[0][1]
    assert lines[1][0] == logging.INFO and "reachable again" in lines[1][1]
    assert not any(r.exc_info for r in caplog.records)


def test_an_outage_before_the_service_serves_is_said_once_it_serves(caplog) -> None:  # type: ignore[no-untyped-def]
    """Before `serving` (a start under way, `mlx migrate`) an outage is tracked in silence:
    a start that fails on it says so in its own line. One that lasts into serving is said
    then; one over before is never said, nor its end."""
    caplog.set_level(logging.INFO, logger="mlx_platform.storage")
    a = Availability()
    a.down("OperationalError: connection refused")
    assert a.is_down
    a.up()
    assert not a.is_down
    a.down("OperationalError: the second one")
    assert caplog.records == []
    a.serving()
    a.serving()
    a.up()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == logging.WARNING and "the second one" in lines[0][1]
    assert "answer 503 until it is back" in lines[0][1]
    assert lines[1][0] == logging.INFO and "reachable again" in lines[1][1]


def test_readiness_probes_at_most_once_a_second(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    monkeypatch.setattr(db_module.time, "monotonic", lambda: now[0])
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    probes: list[str] = []
    event.listen(
        db.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_a: (
            probes.append(statement) if "SELECT" in statement else None
        ),
    )
    for _ in range(100):
        assert db.readiness() is None
    assert probes == ["SELECT 1"]
    now[0] += db_module.READY_MAX_AGE_S / 2
    assert db.readiness() is None
    assert len(probes) == 1
    now[0] += db_module.READY_MAX_AGE_S
    assert db.readiness() is None
    assert len(probes) == 2

    db.dispose()

    # a database that cannot be opened: not ready, and the outage noted
    gone = Database(f"sqlite:///{tmp_path / 'gone' / 'x.db'}")
    assert gone.readiness() == "the database cannot be reached"
    assert gone.availability.is_down
    gone.dispose()
