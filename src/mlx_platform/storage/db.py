"""Engines, transactions and migrations."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("mlx_platform.storage")

_MIGRATIONS = Path(__file__).parent / "migrations"
# The key of the PostgreSQL advisory lock `Database.migrate` holds (any constant: "mlxm").
_MIGRATION_LOCK_KEY = 0x6D6C786D
# The key of the advisory lock every desired-state change holds on PostgreSQL ("mlxs").
_STATE_LOCK_KEY = 0x6D6C7873
# The channel replicas hear desired-state changes on (PostgreSQL LISTEN/NOTIFY).
STATE_CHANNEL = "mlx_state"


def _make_engine(url: str, *, immediate: bool = False) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        # pysqlite's own transaction handling defers BEGIN and cannot say IMMEDIATE; take it
        # over as SQLAlchemy's docs show ("Serializable isolation / Savepoints / Transactional
        # DDL"), so that a write transaction holds the write lock from its first statement and
        # two writers queue instead of failing with "database is locked" on upgrade.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.create_function("casefold", 1, _casefold, deterministic=True)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin_sql)

    return engine


def _casefold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


class Database:
    """The service's database: a read engine and, on SQLite, a separate writer engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.write_engine = (
            _make_engine(url, immediate=True)
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only."""
        with self._read() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on any exception."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def state_change(self) -> Iterator[Session]:
        """A write transaction that serialises against every other desired-state change, on
        this replica and on every other one: the rules read inside it see every change
        committed before it, and no change can commit between their reading and its writing.

        PostgreSQL: a transaction-level advisory lock taken before anything is read (row locks
        would not stop a conflicting plugin from becoming active: there is no row to lock for
        "no other active plugin"). SQLite: BEGIN IMMEDIATE, the file's write lock, already does
        it. Call `notify` inside to tell the other replicas, at commit, what changed.
        """
        with self._write() as session, session.begin():
            if self.dialect == "postgresql":
                session.execute(text(f"SELECT pg_advisory_xact_lock({_STATE_LOCK_KEY})"))
            yield session

    def notify(self, session: Session, payload: str) -> None:
        """Tell every listening replica `payload` when `session`'s transaction commits
        (PostgreSQL NOTIFY is transactional: a rolled-back change is never announced)."""
        if self.dialect == "postgresql":
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": STATE_CHANNEL, "payload": payload[:7000]},
            )

    def listen(self, on_message: Callable[[str], None], stop: threading.Event) -> None:
        """Call `on_message(payload)` for every change notification until `stop` is set
        (PostgreSQL only; returns at once elsewhere). Reconnects after a lost connection,
        and calls `on_message("")` then, since notifications may have been missed."""
        if self.dialect != "postgresql":
            return
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {STATE_CHANNEL}")
                    on_message("")  # anything committed before LISTEN was heard of now
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            on_message(note.payload)
            except Exception:  # noqa: BLE001 - the database went away: poll until it is back
                log.warning("change notifications lost; reconnecting", exc_info=False)
                stop.wait(1.0)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.write_engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas starting together on a fresh database would each run the DDL and
                # all but one fail (duplicate key in pg_type); on SQLite BEGIN IMMEDIATE
                # queues them. Hold a transaction-level advisory lock until the commit below:
                # the others wait, then find the schema at head.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
