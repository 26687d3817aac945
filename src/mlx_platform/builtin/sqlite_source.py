"""`SQLiteSource`: SQL queries against one SQLite database file, read-only by default."""

from __future__ import annotations

import base64
import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar

from mlx_platform.plugins import Plugin, PluginError, operation

_DEFAULT_READ_ONLY = True
_DEFAULT_TIMEOUT = 5.0
_DEFAULT_MAX_ROWS = 1000


def _json_value(value: Any) -> Any:
    """SQLite values as JSON: BLOBs become base64 text, since JSON has no bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _deny_attach(action: int, *_args: Any) -> int:
    """SQLite authorizer: refuse ATTACH/DETACH so a query cannot reach (or create) other files."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class SQLiteSource(Plugin):
    """Query one SQLite database file; read-only unless configured otherwise."""

    name: ClassVar[str | None] = "sqlite_source"
    type: ClassVar[str | None] = "data_source"
    version: ClassVar[str | None] = "1.0.0"
    description: ClassVar[str] = (
        "Runs SQL queries against a SQLite database file and introspects its schema. "
        "Opens the file read-only unless `read_only` is false."
    )
    configuration_schema: ClassVar[dict[str, Any]] = {
        "database_path": {
            "type": "string",
            "required": True,
            "description": "Path of the SQLite database file",
        },
        "read_only": {
            "type": "boolean",
            "default": _DEFAULT_READ_ONLY,
            "hot_reload": False,
            "description": "Open the database read-only (the file must then exist)",
        },
        "timeout": {
            "type": "number",
            "default": _DEFAULT_TIMEOUT,
            "minimum": 0,
            "maximum": 300,
            "description": "Seconds to wait for a locked database before giving up",
        },
        "max_rows": {
            "type": "integer",
            "default": _DEFAULT_MAX_ROWS,
            "minimum": 1,
            "maximum": 100000,
            "description": "Most rows one query returns; further rows are dropped",
        },
    }
    metadata: ClassVar[dict[str, Any]] = {
        "category": "database",
        "capabilities": ["sql_queries", "schema_introspection"],
        "data_formats": ["sql_table"],
        "integration_points": ["feature_stores", "ml_platforms"],
        "conflicts_with": [],
        "requires": [],
        "optional_deps": [],
        "supported_platforms": ["linux", "darwin", "win32"],
        "min_python_version": "3.11",
        "min_memory_mb": 64,
        "min_cpu_cores": 0.1,
        "gpu_required": False,
    }

    def __init__(self) -> None:
        super().__init__()
        self._conn: sqlite3.Connection | None = None
        # One connection shared by calls arriving on different threads: the lock serialises them.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: dict[str, Any]) -> None:
        """Store the configuration; reopen the connection if a running source's file changed."""
        path = config.get("database_path")
        if not isinstance(path, str) or not path.strip():
            raise PluginError("database_path is required and must be a non-empty string")
        previous = self.config
        super().configure(config)
        if self._conn is None:
            return
        if (previous.get("database_path"), previous.get("read_only")) != (
            path,
            config.get("read_only"),
        ):
            try:
                self.start()  # swaps in the new connection only once it is open
            except PluginError:
                self.config = previous
                raise
        elif previous.get("timeout") != config.get("timeout"):
            with self._lock:
                if self._conn is not None:
                    self._conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")

    @property
    def _read_only(self) -> bool:
        return bool(self.config.get("read_only", _DEFAULT_READ_ONLY))

    @property
    def _timeout(self) -> float:
        return float(self.config.get("timeout", _DEFAULT_TIMEOUT))

    @property
    def _max_rows(self) -> int:
        return int(self.config.get("max_rows", _DEFAULT_MAX_ROWS))

    def start(self) -> None:
        """Open the connection now, so a wrong path fails activation rather than the first call."""
        path = Path(str(self.config.get("database_path", ""))).expanduser()
        try:
            if self._read_only:
                if not path.is_file():
                    raise PluginError(f"database file not found: {path} (read_only is set)")
                conn = sqlite3.connect(
                    path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    timeout=self._timeout,
                    check_same_thread=False,
                    isolation_level=None,
                )
            else:
                conn = sqlite3.connect(
                    path, timeout=self._timeout, check_same_thread=False, isolation_level=None
                )
        except sqlite3.Error as exc:
            raise PluginError(f"cannot open database {path}: {exc}") from exc
        try:
            conn.set_authorizer(_deny_attach)
            # Reading the schema proves the file is a SQLite database.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise PluginError(f"cannot read database {path}: {exc}") from exc
        with self._lock:
            previous, self._conn = self._conn, conn
        if previous is not None:
            previous.close()

    def stop(self) -> None:
        """Interrupt a query still running, then close the connection."""
        conn = self._conn
        if conn is None:
            return
        conn.interrupt()
        with self._lock:
            if self._conn is conn:
                self._conn = None
            conn.close()

    def health_check(self) -> dict[str, Any]:
        """Run ``SELECT 1``; a connection held by a query for over `timeout` s is unhealthy."""
        if self._conn is None:
            return {"status": "unhealthy", "message": "not started: no open connection"}
        if not self._lock.acquire(timeout=max(self._timeout, 0.1)):
            return {"status": "unhealthy", "message": "connection busy with a long-running query"}
        try:
            if self._conn is None:
                return {"status": "unhealthy", "message": "connection closed"}
            self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return {"status": "unhealthy", "message": f"SELECT 1 failed: {exc}"}
        finally:
            self._lock.release()
        mode = "read-only" if self._read_only else "read-write"
        return {"status": "healthy", "message": f"connected ({mode})"}

    # ------------------------------------------------------------------ operations

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise PluginError("the source is not started")
        return self._conn

    @operation
    def query(
        self, sql: str, parameters: list[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run one SQL statement; return at most `max_rows` rows and say whether more existed."""
        if not isinstance(sql, str) or not sql.strip():
            raise PluginError("sql must be a non-empty string")
        if parameters is None:
            params: list[Any] | tuple[Any, ...] | dict[str, Any] = ()
        elif isinstance(parameters, list | tuple | dict):
            params = parameters
        else:
            raise PluginError("parameters must be a list (for ?) or an object (for :name)")
        limit = self._max_rows
        with self._lock:
            conn = self._connection()
            try:
                cursor = conn.execute(sql, params)
                try:
                    columns = [d[0] for d in cursor.description or ()]
                    fetched = cursor.fetchmany(limit + 1) if columns else []
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                raise PluginError(f"query failed: {exc}") from exc
        truncated = len(fetched) > limit
        rows = [[_json_value(v) for v in row] for row in fetched[:limit]]
        return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated}

    @operation
    def tables(self) -> list[str]:
        """Names of the tables and views, without SQLite's internal ones."""
        with self._lock:
            try:
                conn = self._connection()
                found = conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                ).fetchall()
            except sqlite3.Error as exc:
                raise PluginError(f"listing tables failed: {exc}") from exc
        return [row[0] for row in found]

    @operation
    def describe(self, table: str) -> list[dict[str, Any]]:
        """Columns of one table or view.

        The name reaches SQL only as a bound parameter (``pragma_table_info(?)``), never
        spliced into the statement, so no name can inject SQL.
        """
        if not isinstance(table, str) or not table:
            raise PluginError("table must be a non-empty string")
        with self._lock:
            conn = self._connection()
            try:
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                    (table,),
                ).fetchone()
                if exists is None:
                    raise PluginError(f"no table or view named {table!r}")
                info = conn.execute(
                    'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid',
                    (table,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise PluginError(f"describing {table!r} failed: {exc}") from exc
        return [
            {"name": name, "type": ctype, "notnull": bool(notnull), "pk": bool(pk)}
            for name, ctype, notnull, pk in info
        ]
