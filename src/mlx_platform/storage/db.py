"""Engines, transactions and migrations."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mlx_platform.storage.availability import Availability, classify, reason_of

log = logging.getLogger("mlx_platform.storage")

_MIGRATIONS = Path(__file__).parent / "migrations"
# The key of the PostgreSQL advisory lock `Database.migrate` holds (any constant: "mlxm").
_MIGRATION_LOCK_KEY = 0x6D6C786D
# The key of the advisory lock every desired-state change holds on PostgreSQL ("mlxs").
_STATE_LOCK_KEY = 0x6D6C7873
# The channel replicas hear desired-state changes on (PostgreSQL LISTEN/NOTIFY).
STATE_CHANNEL = "mlx_state"
# A PostgreSQL server that does not answer a connect in this many seconds is unreachable
# (without it a connect to a host that drops packets waits for the kernel, minutes).
CONNECT_TIMEOUT_S = 5
# /readyz: one probe (SELECT 1) at most this often, whoever asks; an answer within this long.
READY_MAX_AGE_S = 1.0
READY_TIMEOUT_S = 2.0
# PostgreSQL: a pooled connection is pinged before use only when it has sat unused this long
# (see `_ping_when_idle`).
PING_AFTER_IDLE_S = 1.0


# 19 digits in a row: a number that may not fit in 64 bits (every integer of up to 18 digits
# does), which orjson would read as a float, silently; or just a long number in a string.
# Found by mapping every digit to "0" and every other byte to " ": ~1.6 us for a 400-byte
# document, where a regular expression took ~9 (more than orjson's whole parse).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19


def _json_loads(text_: str | bytes) -> Any:
    """JSON columns as read: orjson (several times the standard library's speed, which a list
    page of 20 plugins spent ~0.4 ms on; issue 13), and the standard library for what only
    it reads as written: integers beyond 64 bits (orjson makes them floats) and NaN and
    Infinity (which `json.dumps`, the columns' writer, writes for such floats)."""
    raw = text_.encode() if isinstance(text_, str) else text_
    if _LONG_RUN in raw.translate(_DIGITS_AS_ZERO):
        return json.loads(text_)
    try:
        return orjson.loads(text_)
    except orjson.JSONDecodeError:
        return json.loads(text_)


def _make_engine(url: str, *, immediate: bool = False) -> Engine:
    kwargs: dict[str, Any] = {"future": True, "json_deserializer": _json_loads}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=20)
        if "connect_timeout" not in url:
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
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

    else:
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's `pool_pre_ping`, but only for a connection that sat in the pool for
    `PING_AFTER_IDLE_S` or more: a connection in steady use skips the round trip (one of the
    three a list read made on PostgreSQL: ~0.15-0.4 ms here, issue 13).

    What a ping on every checkout would catch and this does not: a connection that died
    within the last second (the server restarted, an admin terminated it). Its statement
    fails as a disconnect, which makes SQLAlchemy invalidate the whole pool ("Disconnect
    Handling - Optimistic" in its docs); the request answers 503 like any outage and the
    next ones connect anew. A dead connection found by the ping is replaced at once, as the
    pre-ping does: `DisconnectionError` from a checkout listener makes the pool retry."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info["mlx_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["mlx_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("mlx_used_at", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: replace the connection
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc


def head_revision() -> str:
    """The newest migration's revision: migrations are numbered files, `NNNN_what.py` with
    revision "NNNN", each following the one before (tests/unit/test_migrations_head.py
    checks this against Alembic's own reading of the scripts)."""
    return max(p.name[:4] for p in (_MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


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
        # itertools.count: next() is atomic under the GIL, so two threads never share a number
        self._generations = itertools.count(1)
        self.generation = 0
        self.announcement = 0
        # PostgreSQL reads run outside a transaction: under READ COMMITTED each statement
        # takes its own snapshot inside one anyway, and BEGIN and ROLLBACK are two round
        # trips a read does not need (~0.3 ms of a 2.5 ms search at 100,000 plugins); psycopg
        # switches autocommit on the client, without a round trip
        read_engine = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )
        self._read = sessionmaker(read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        # Outage tracking from the engines' own events: every failed connect or statement
        # (`handle_error`) and every statement that worked (`after_cursor_execute`).
        self.availability = Availability()
        for engine in {self.engine, self.write_engine}:
            event.listen(engine, "handle_error", self._on_error)
            event.listen(engine, "after_cursor_execute", self._on_statement)
        self._probe_lock = threading.Lock()
        self._probe_last: tuple[float, str | None] = (float("-inf"), None)
        self._probe_running: Future[str | None] | None = None
        self._probe_pool: ThreadPoolExecutor | None = None

    def _on_error(self, context: Any) -> None:
        # A pooled connection found dead by its ping (`_ping_when_idle`) is replaced at
        # once, outside this event: only the replacement's connect failing (reported here
        # too) says the database is away.
        self.availability.saw(context.original_exception)

    def _on_statement(self, *_args: Any) -> None:
        self.availability.up()

    def readiness(self) -> str | None:
        """None when the database answers `SELECT 1`, else why not. Probed at most once per
        `READY_MAX_AGE_S` whoever asks (a load balancer polling /readyz cannot overload the
        database), and answered within `READY_TIMEOUT_S` even when the probe hangs."""
        with self._probe_lock:
            at, result = self._probe_last
            if time.monotonic() - at < READY_MAX_AGE_S:
                return result
            running = self._probe_running
            if running is None or running.done():
                if self._probe_pool is None:
                    self._probe_pool = ThreadPoolExecutor(1, thread_name_prefix="mlx-readyz")
                running = self._probe_running = self._probe_pool.submit(self._probe)
        try:
            return running.result(timeout=READY_TIMEOUT_S)
        except FutureTimeout:
            return f"the database did not answer within {READY_TIMEOUT_S:g} s"

    def _probe(self) -> str | None:
        result: str | None = None
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; said why
            kind = classify(exc)
            result = (
                "the database cannot be reached"
                if kind == "outage"
                else "the database is busy"
                if kind == "busy"
                else "the database failed a probe"
            )
            if kind is None and self._probe_last[1] is None:  # once, not once a second
                log.warning("readiness probe failed: %s", reason_of(exc))
        self._probe_last = (time.monotonic(), result)
        return result

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
        try:
            with self._write() as session, session.begin():
                yield session
        finally:
            self.changed()

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
        try:
            with self._write() as session, session.begin():
                if self.dialect == "postgresql":
                    session.execute(text(f"SELECT pg_advisory_xact_lock({_STATE_LOCK_KEY})"))
                yield session
        finally:
            self.changed()

    def changed(self) -> None:
        """A new `generation`: called after every write transaction of this process ends
        (committed or not: a spurious change costs one cache refill). A reader that takes the
        generation before it reads and finds it unchanged afterwards read nothing older than
        that generation's writes: what the server's read cache (server/read_cache.py) stamps
        its answers with."""
        self.generation = next(self._generations)

    def announced(self) -> None:
        """A change notification came (a desired-state change on any replica, or a new
        LISTEN connection that may have missed some): a new `announcement`, and a new
        `generation`."""
        self.announcement = next(self._generations)
        self.changed()

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
        warned = False  # one log line per failure streak, not one a second
        while not stop.is_set():
            listening = False
            try:
                with psycopg.connect(
                    dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    conn.execute(f"LISTEN {STATE_CHANNEL}")
                    listening = True
                    self.availability.up()
                    if warned:
                        log.info("change notifications heard again")
                    warned = False
                    self.announced()
                    on_message("")  # anything committed before LISTEN was heard of now
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.announced()
                            on_message(note.payload)
            except Exception as exc:  # noqa: BLE001 - the database went away: poll until back
                if listening:
                    # A listening connection dropped (a restart, a terminated backend): no
                    # outage yet, the reconnect tells (and catches up on what was missed).
                    log.debug("change notifications connection dropped: %s", reason_of(exc))
                    stop.wait(0.2)
                    continue
                # A failed connect: an outage is the tracker's one line; anything else
                # (a refused login...) is said here, once.
                if self.availability.saw(exc) != "outage" and not warned:
                    log.warning("change notifications lost (%s); reconnecting", reason_of(exc))
                    warned = True
                stop.wait(1.0)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``).

        A schema already there, as at every start but the first after an upgrade, is told by
        one read of `alembic_version` against `head_revision()`, without importing Alembic
        and loading every migration script (~0.1-0.2 s of a ~1 s start, issue 13)."""
        if self._at_head():
            return
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

    def _at_head(self) -> bool:
        try:
            with self.engine.connect() as conn:
                held = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except SQLAlchemyError:
            return False  # no schema yet, or no database: Alembic says which, and acts
        return [r[0] for r in held] == [head_revision()]

    def dispose(self) -> None:
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
