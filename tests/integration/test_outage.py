"""The database goes away and comes back, on the real PostgreSQL (issue 11, "Database outage").

A server runs on a database of its own; the test makes that database unreachable the way an
outage does (`ALTER DATABASE ... ALLOW_CONNECTIONS false`, then every connection to it
terminated, from an admin connection to the `postgres` database), then allows connections
again. Meanwhile:

- every request that needs the database answers 503 SERVICE_UNAVAILABLE in the envelope with
  `Retry-After` (not 500); a request without a token still answers 401 (no database needed);
- `/readyz` answers 503, `/healthz` 200 (liveness);
- invocations of active plugins (in-process and in a worker process) fail cleanly with that
  503: the service cannot read the plugin's desired state (decision in docs/decisions.md);
- the service log has one line when the outage starts, one when it ends, and no traceback,
  however many requests and background rounds failed in between;
- invocations recorded before the outage and not yet written when it started are kept
  through the failed flushes and counted exactly once it is over;
- the SDK retries a GET that met the 503 and gets the answer once the database is back;
- the service recovers by itself: `/readyz` 200 within a few seconds, requests work.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust): fails when it is not there.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from mlx_platform.sdk import MLXClient
from tests.conftest import (
    LiveServer,
    _pg_admin_connect,
    assert_error,
    invoke,
    poll,
    postgres_url_for,
    register,
    start_inprocess,
)

# The service says "try again in" this many seconds while the database is away.
RETRY_AFTER_S = 5
# Back within: /readyz caches its probe for 1 s; then one connect. 5 s is "a few seconds".
RECOVERY_LIMIT_S = 5.0
# The metrics flush loop's period (core/bootstrap.py: Replica.METRICS_FLUSH_INTERVAL).
FLUSH_INTERVAL_S = 5.0

OUTAGE_START = re.compile(r"database unreachable \(")
OUTAGE_END = re.compile(r"database reachable again after")


class Outage:
    """Makes one PostgreSQL database unreachable, and reachable again."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.down = False

    def start(self) -> None:
        with _pg_admin_connect() as conn:
            conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.database,),
            )
        self.down = True

    def end(self) -> None:
        with _pg_admin_connect() as conn:
            conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')
        self.down = False

    def query(self, sql: str, *params: Any) -> Any:
        """One value (or a statement run), on the server's database directly (not while it is
        down)."""
        with psycopg.connect(
            f"host=127.0.0.1 port=5432 user=postgres dbname={self.database}", autocommit=True
        ) as conn:
            cur = conn.execute(sql, params)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[LiveServer, Outage]]:
    """A server on a PostgreSQL database of its own (whatever MLX_TEST_DATABASE says)."""
    home = tmp_path / "home"
    url = postgres_url_for(home, 0)
    outage = Outage(url.rsplit("/", 1)[1])
    # in-process; isolation "": each plugin's own (one test runs one in a worker process)
    server = start_inprocess(home, database_url=url, log_level="INFO", isolation="")
    try:
        yield server, outage
    finally:
        if outage.down:
            outage.end()
        server.stop()


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+): ")
# Lines other parts of the service write once per event during an outage (reported, not
# this module's): a refused state change's audit record not written; each metrics flush.
KNOWN_PER_EVENT = ("mlx_platform.audit:", "mlx_platform.metrics:", "mlx_platform.access:")


def log_records(lines: list[str]) -> list[str]:
    """Log records (a line with the format's timestamp, and the lines that continue it),
    from the logger's name on."""
    records: list[str] = []
    for line in lines:
        m = _RECORD.match(line)
        if m:
            records.append(line[m.start(2) :])
        elif records:
            records[-1] += "\n" + line
    return records


def logger_of(record: str) -> str:
    return record.split(":", 1)[0]


def log_lines(server: LiveServer) -> list[str]:
    return server.log_text().splitlines()


def matching(server: LiveServer, pattern: re.Pattern[str]) -> list[str]:
    return [line for line in log_lines(server) if pattern.search(line)]


def assert_unavailable(r: httpx.Response) -> None:
    err = assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert r.headers.get("retry-after") == str(RETRY_AFTER_S), r.headers
    # the driver's words (host, port, database name) stay in the service
    assert "127.0.0.1" not in r.text and "psycopg" not in r.text, r.text
    assert err["details"] == {"retry_after_seconds": RETRY_AFTER_S}


def stored_count(outage: Outage, plugin_id: str) -> int:
    """Invocations of `plugin_id` in its minute rows (what the flushes wrote)."""
    n = outage.query(
        "SELECT coalesce(sum(count), 0) FROM metric_buckets "
        "WHERE plugin_id = %s AND resolution = 60",
        plugin_id,
    )
    return int(n)


def test_an_outage_answers_503_logs_twice_keeps_metrics_and_ends_by_itself(
    pg: tuple[LiveServer, Outage],
) -> None:
    server, outage = pg
    admin = server.client()
    reader = server.client(scopes=("plugins:read",))
    local = register(admin, "outage_local", isolation="inprocess")
    worker = register(admin, "outage_worker", class_path="mlx_test_plugins.WorkerProbePlugin")
    for plugin_id in (local, worker):
        r = admin.post(f"/v1/plugins/{plugin_id}/activate", json={"configuration": {}})
        assert r.status_code == 200, r.text
    r = invoke(admin, worker, "pid")
    assert r.status_code == 200, r.text
    worker_pid = r.json()["data"]["result"]

    # ---- calls recorded in memory, not written yet, when the outage starts
    # One call, then wait for the flush loop to write it: the next flush is then ~5 s away,
    # time enough for the calls below and the outage to start before it.
    assert invoke(admin, local, "echo", value=0).status_code == 200
    poll(lambda: stored_count(outage, local), lambda n: n == 1, timeout=FLUSH_INTERVAL_S + 5)
    t_flushed = time.monotonic()
    before = 24
    for i in range(before):
        assert invoke(admin, local, "echo", value=i).status_code == 200
    outage.start()
    assert time.monotonic() - t_flushed < FLUSH_INTERVAL_S - 1, "too slow to beat the flush"

    # ---- while the database is away
    ready = poll(
        lambda: server.anonymous.get("/readyz", timeout=10),
        lambda r: r.status_code == 503,
        timeout=5,
        what="/readyz 503",
    )
    assert_error(ready, 503, "SERVICE_UNAVAILABLE")
    assert ready.headers.get("retry-after") == str(RETRY_AFTER_S)
    live = server.anonymous.get("/healthz", timeout=10)
    assert live.status_code == 200, live.text

    # A GET through the SDK meets the 503 and retries after Retry-After.
    sdk_answer: dict[str, Any] = {}

    def sdk_get() -> None:
        with MLXClient(
            api_token=server.token("plugins:read"),
            base_url=server.url,
            max_retries=6,
            http_client=server.anonymous,  # its requests to the in-process service
        ) as client:
            try:
                sdk_answer["health"] = client.plugins.health_check(local)
            except Exception as exc:  # the test reports it below
                sdk_answer["error"] = exc

    sdk = threading.Thread(target=sdk_get, daemon=True)
    sdk.start()
    poll(
        lambda: matching(server, re.compile(rf"GET /v1/plugins/{local}/health 503")),
        bool,
        timeout=10,
        what="the SDK's first try answered 503",
    )

    requests = 0
    for _ in range(3):
        assert_unavailable(reader.get("/v1/plugins"))
        assert_unavailable(reader.get(f"/v1/plugins/{local}"))
        assert_unavailable(reader.get(f"/v1/plugins/{worker}/health"))
        assert_unavailable(reader.get(f"/v1/plugins/{local}/metrics"))
        assert_unavailable(admin.get("/v1/nodes"))
        assert_unavailable(admin.post("/v1/plugins", json=_body("outage_new")))
        assert_unavailable(admin.post(f"/v1/plugins/{local}/deactivate", json={}))
        # invocations fail cleanly: the plugin's desired state cannot be read
        assert_unavailable(invoke(admin, local, "echo", value="during"))
        assert_unavailable(invoke(admin, worker, "pid"))
        requests += 9
    # no token: refused before anything needs the database
    assert_error(server.anonymous.get("/v1/plugins", timeout=10), 401, "UNAUTHORIZED")

    # A flush fails while the database is away, and keeps the calls it could not write.
    kept = poll(
        lambda: [line for line in log_lines(server) if "metrics flush failed" in line],
        bool,
        timeout=FLUSH_INTERVAL_S + 5,
        what="a failed metrics flush",
    )
    assert "kept for the next flush" in kept[0], kept

    # ---- the log during the outage: one line when it started, no traceback
    text = server.log_text()
    assert len(matching(server, OUTAGE_START)) == 1, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert "unhandled error" not in text
    assert text.count("reconcile pass failed") <= 1

    # ---- the database is back
    outage.end()
    t_back = time.monotonic()
    poll(
        lambda: server.anonymous.get("/readyz", timeout=10).status_code,
        lambda s: s == 200,
        timeout=RECOVERY_LIMIT_S,
        what=f"/readyz 200 within {RECOVERY_LIMIT_S:g} s",
    )
    recovered_in = time.monotonic() - t_back
    r = reader.get("/v1/plugins")
    assert r.status_code == 200, r.text
    after = invoke(admin, local, "echo", value="after")
    assert after.status_code == 200, after.text
    r = invoke(admin, worker, "pid")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == worker_pid  # the worker ran through the outage

    # Every call made before the outage was kept and written, once: 1 + 24 + 1 after.
    r = reader.get(f"/v1/plugins/{local}/metrics")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["metrics"]["execution_count"] == 1 + before + 1
    # and stored by the next flush (a read does not flush), once
    stored = poll(
        lambda: stored_count(outage, local),
        lambda n: n >= 1 + before + 1,
        timeout=3 * FLUSH_INTERVAL_S,
        what="the kept calls stored by a flush",
    )
    assert stored == 1 + before + 1

    # The SDK's retry got the answer once the database was back.
    sdk.join(2 * RETRY_AFTER_S + 10)
    assert not sdk.is_alive()
    assert "error" not in sdk_answer, sdk_answer
    assert sdk_answer["health"].plugin_id == local

    # ---- one line when it ended, after the one when it started; still no traceback
    poll(lambda: matching(server, OUTAGE_END), bool, timeout=5, what="the outage-end line")
    lines = log_lines(server)
    starts = [i for i, line in enumerate(lines) if OUTAGE_START.search(line)]
    ends = [i for i, line in enumerate(lines) if OUTAGE_END.search(line)]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], (starts, ends)
    assert " WARNING mlx_platform.storage: " in lines[starts[0]], lines[starts[0]]
    assert " INFO mlx_platform.storage: " in lines[ends[0]], lines[ends[0]]
    assert "Traceback" not in server.log_text()
    # What else was logged in between: one line per failure streak of a background loop,
    # none per request or per round.
    records = log_records(lines[starts[0] : ends[0] + 1])
    others = [r for r in records if not r.startswith(KNOWN_PER_EVENT)]
    assert all("\n" not in r for r in others), others
    assert [logger_of(r) for r in others[1:-1]] in ([], ["mlx_platform.reconciler"]), others
    print(
        f"\nrecovered in {recovered_in:.2f} s; {requests} requests answered 503; "
        f"{len(records)} log records besides the access log, of which:\n" + "\n".join(others)
    )


def _body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "data_source",
        "version": "1.0.0",
        "description": "registered during an outage",
        "class_path": "mlx_test_plugins.EchoPlugin",
        "configuration_schema": {},
        "metadata": {},
    }


def test_healthz_and_readyz_are_documented_in_the_openapi(
    pg: tuple[LiveServer, Outage],
) -> None:
    server, _ = pg
    doc = server.anonymous.get("/openapi.json", timeout=10).json()
    readyz = doc["paths"]["/readyz"]["get"]
    assert "503" in readyz["responses"] and "200" in readyz["responses"]
    assert "database" in readyz["description"]
    assert "Liveness" in doc["paths"]["/healthz"]["get"]["summary"]
    # every endpoint that needs the database documents the outage answer
    for path, methods in doc["paths"].items():
        if path.startswith("/v1/"):
            for method, op in methods.items():
                assert "SERVICE_UNAVAILABLE" in op["responses"]["503"]["description"], (
                    path,
                    method,
                )
    r = server.anonymous.get("/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "version": doc["info"]["version"],
        "database": "postgresql",
    }


def test_a_database_error_that_is_no_outage_stays_an_internal_error(
    pg: tuple[LiveServer, Outage],
) -> None:
    """Only the database being away (or busy) answers 503: a broken schema is a fault of the
    service, answered 500 and logged with its traceback, and it is no outage."""
    server, outage = pg
    reader = server.client(scopes=("plugins:read",))
    assert reader.get("/v1/plugins").status_code == 200
    outage.query("ALTER TABLE plugins RENAME TO plugins_away")
    try:
        # a query not asked before: the answer above may be served from the read cache for
        # a second (nothing the service wrote has changed), this one reads the table
        r = reader.get("/v1/plugins", params={"limit": 7})
        err = assert_error(r, 500, "INTERNAL_ERROR")
        assert r.headers["x-request-id"] in str(err["message"])
        assert "retry-after" not in r.headers
        assert server.anonymous.get("/readyz", timeout=10).status_code == 200
    finally:
        outage.query("ALTER TABLE plugins_away RENAME TO plugins")
    assert reader.get("/v1/plugins").status_code == 200
    text = server.log_text()
    assert "Traceback" in text and "plugins" in text
    assert not OUTAGE_START.search(text)
