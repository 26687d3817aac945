"""Is the database there? Which errors mean "not now" rather than "a bug", and one log line
when an outage starts and one when it ends.

`classify` sorts a database error into

- ``"outage"``: the database cannot be reached (refused, terminated, not accepting
  connections, the SQLite file cannot be opened or read);
- ``"busy"``: it is there but could not do this now (deadlock, lock or statement timeout,
  too many connections, the connection pool exhausted, a SQLite file locked, read-only or
  full);
- ``None``: anything else (a bug, a schema problem): an internal error.

The first two answer 503 with `Retry-After`; only an outage is tracked. `Availability` is fed
by the engine's own events (every failed connect or statement, every successful statement:
see `Database`), by the change listener and by `/readyz`, so that whatever notices first
logs the start, and whatever succeeds first after it logs the end; requests and background
loops then log nothing of their own.

The two lines speak of a service answering requests: they are said once it does (`serving`,
called when the start is done). Before, an outage is tracked without a word: a start that
fails on it says so in its own one line and stops (core.bootstrap), and a command such as
`mlx migrate` answers no requests at all.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Literal

from sqlalchemy import exc as sa_exc

log = logging.getLogger("mlx_platform.storage")

Kind = Literal["outage", "busy"]

# How long a client should wait before trying again (the Retry-After header).
RETRY_AFTER_OUTAGE_S = 5
RETRY_AFTER_BUSY_S = 1

# SQLite reports every failure as OperationalError (or DatabaseError); only the message tells
# a missing or unreadable file from a locked one or from a bad statement.
_SQLITE_OUTAGE = (
    "unable to open database",
    "disk i/o error",
    "database disk image is malformed",
    "file is not a database",
    "cannot operate on a closed database",
)
_SQLITE_BUSY = (
    "database is locked",
    "database table is locked",
    "readonly database",
    "database or disk is full",
)


def _psycopg_kind(err: BaseException) -> Kind | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL support not installed
        return None
    if isinstance(err, psycopg.InterfaceError):
        return "outage"  # "the connection is closed" and the like
    if not isinstance(err, psycopg.OperationalError):
        return None
    state = getattr(err, "sqlstate", None) or ""
    # No SQLSTATE: the connection failed before the server said anything (refused, reset,
    # timed out, or the server's FATAL at connect: database not accepting connections).
    # 08: connection exception; 57P: admin/crash shutdown, cannot connect now, database
    # dropped. Any other OperationalError (40 rollback, 53 resources, 55P03 lock timeout,
    # 57014 statement timeout) is the database refusing this request now: busy.
    if not state or state.startswith(("08", "57P")):
        return "outage"
    return "busy"


def classify(exc: BaseException) -> Kind | None:
    """``"outage"``, ``"busy"`` or None (not a database availability problem)."""
    if isinstance(exc, sa_exc.TimeoutError):
        return "busy"  # no pooled connection came free in time
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return "outage"
        orig: BaseException | None = exc.orig
    else:
        orig = exc
    if orig is None:
        return None
    if isinstance(orig, sqlite3.DatabaseError):
        message = str(orig).lower()
        if any(m in message for m in _SQLITE_OUTAGE):
            return "outage"
        if any(m in message for m in _SQLITE_BUSY):
            return "busy"
        return None
    return _psycopg_kind(orig)


def reason_of(exc: BaseException) -> str:
    """The driver's own first line (SQLAlchemy's text adds the SQL and its parameters, which
    must not reach a log line), at most 300 characters."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    return f"{type(orig).__name__}: {text}"[:300]


class Availability:
    """Whether the database is known to be unreachable, since when, and the two log lines.

    `down` and `up` are cheap when nothing changes (a flag read), so they can be called on
    every failed or successful statement."""

    def __init__(self, what: str = "database") -> None:
        self.what = what
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._serving = False
        self._announced = False  # the outage under way was logged (its end will be too)

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    @property
    def reason(self) -> str:
        return self._reason

    def down(self, reason: str) -> None:
        if self._down_since is not None:
            return
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._reason = reason
            if not self._serving:
                return
            self._announced = True
        self._log_down(reason)

    def _log_down(self, reason: str) -> None:
        log.warning(
            "%s unreachable (%s): requests that need it answer 503 until it is back",
            self.what,
            reason,
        )

    def up(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since = self._down_since
            if since is None:
                return
            self._down_since = None
            self._reason = ""
            announced, self._announced = self._announced, False
        if announced:
            log.info("%s reachable again after %.1f s", self.what, time.monotonic() - since)

    def serving(self) -> None:
        """The service answers requests from now on: outages are logged, and one already
        under way is logged now."""
        with self._lock:
            self._serving = True
            if self._down_since is None or self._announced:
                return
            self._announced = True
            reason = self._reason
        self._log_down(reason)

    def saw(self, exc: BaseException) -> Kind | None:
        """Note `exc` (a failed connect or statement); returns its kind."""
        kind = classify(exc)
        if kind == "outage":
            self.down(reason_of(exc))
        return kind
