"""Metrics recorded, flushed to a real database (a SQLite file, or PostgreSQL when
`MLX_TEST_DATABASE=postgres`), and merged back at every granularity."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from mlx_platform.core.metrics import Figures, MetricsRecorder, query_metrics
from mlx_platform.storage import Database, MetricBucketRow
from tests.conftest import (
    POSTGRES_SERVER,
    ROOT,
    _pg_admin_connect,
    on_postgres,
    postgres_url_for,
)

PLUGIN = "plugin_m_001"


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.fixture
def recorded(tmp_path: Path):
    """Three hours and a bit of calls, 7 a minute, starting 10:37, with every 9th failing."""
    url = postgres_url_for(tmp_path, 0) if on_postgres() else f"sqlite:///{tmp_path / 'm.db'}"
    db = Database(url)
    assert db.dialect == ("postgresql" if on_postgres() else "sqlite")
    db.migrate()
    recorder = MetricsRecorder(db)
    rng = random.Random(5)
    start = datetime(2026, 1, 15, 10, 37, tzinfo=UTC)
    calls: list[tuple[datetime, float, bool]] = []
    for minute in range(200):
        ts = start + timedelta(minutes=minute)
        slot = Figures()
        for i in range(7):
            v = rng.lognormvariate(2, 1.1)
            ok = (minute * 7 + i) % 9 != 0
            slot.count += 1
            slot.sum_ms += v
            slot.errors += 0 if ok else 1
            slot.sketch.record(v)
            calls.append((ts, v, ok))
        recorder._pending[(PLUGIN, int(ts.timestamp()) // 60)] = slot
        if minute % 50 == 0:
            recorder.flush()  # several flushes: buckets are added to, not replaced
    recorder.flush()
    yield recorder, calls
    db.dispose()


@pytest.mark.parametrize("granularity", ["minute", "hour", "day"])
@pytest.mark.parametrize(
    ("offset_start", "offset_end"),
    [(0, 200), (5, 150), (23, 84), (90, 95), (0, 23)],
)
def test_counts_exact_and_percentiles_within_one_percent(
    recorded, granularity, offset_start, offset_end
):
    recorder, calls = recorded
    t0 = calls[0][0]
    start, end = t0 + timedelta(minutes=offset_start), t0 + timedelta(minutes=offset_end)
    inside = [(ts, v, ok) for ts, v, ok in calls if start <= ts < end]
    data = query_metrics(recorder, PLUGIN, start, end, granularity).model_dump()
    m = data["metrics"]
    assert m["execution_count"] == len(inside)
    assert m["error_count"] == sum(1 for _, _, ok in inside if not ok)
    values = [v for _, v, _ in inside]
    for q, key in (
        (0.5, "p50_execution_time_ms"),
        (0.95, "p95_execution_time_ms"),
        (0.99, "p99_execution_time_ms"),
    ):
        assert abs(m[key] - exact(values, q)) / exact(values, q) <= 0.01
    assert sum(p["execution_count"] for p in data["timeseries"]) == len(inside)
    if granularity == "minute":
        assert len(data["timeseries"]) == offset_end - offset_start


def test_empty_range_reads_zero(recorded):
    recorder, calls = recorded
    later = calls[-1][0] + timedelta(days=2)
    data = query_metrics(recorder, PLUGIN, later, later + timedelta(hours=5), "hour").model_dump()
    assert data["metrics"]["execution_count"] == 0
    assert data["metrics"]["p95_execution_time_ms"] == 0
    assert data["timeseries"] == []


# ------------------------------------------------- several replicas, failures, concurrency
#
# Every test below runs on a SQLite file and on the PostgreSQL server at 127.0.0.1:5432 (a
# throwaway database each): the PostgreSQL ones fail, never skip, when it cannot be reached.

# 10:57:30 to about 11:03: every flush below races other writers across minute boundaries,
# and the minutes of two hours (so two hourly roll-up rows) are written at once.
T0 = datetime(2026, 3, 1, 10, 57, 30, tzinfo=UTC).timestamp()
SPAN_S = 330.0


def workload(seed: int, n: int) -> list[tuple[float, float, bool]]:
    """n calls (time, duration ms, ok) spread over SPAN_S seconds from T0, every 11th failing."""
    rng = random.Random(seed)
    return [
        (T0 + SPAN_S * i / n, rng.lognormvariate(2, 1.1), (seed + i) % 11 != 0) for i in range(n)
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path):
    """A migrated, empty database of its own: a SQLite file, or a PostgreSQL database created
    for the test and dropped after it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        db = Database(url)
        db.migrate()
        db.dispose()
        yield url
        return
    import psycopg

    name = f"mlxm_{uuid.uuid4().hex[:20]}"
    try:
        admin = _pg_admin_connect()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{POSTGRES_SERVER}/{name}"
        db = Database(url)
        assert db.dialect == "postgresql"
        db.migrate()
        db.dispose()
        yield url
    finally:
        with _pg_admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica(url: str, node_id: str, seed: int, n: int, flush_every: int, start_at: float) -> int:
    """One replica: records its workload, flushing every `flush_every` calls, from `start_at`
    (wall clock, so that replicas in other threads or processes start together). Returns
    the number of flushes that failed (their batches were retried by later ones)."""
    db = Database(url)
    recorder = MetricsRecorder(db, node_id=node_id)
    failed = 0
    time.sleep(max(0.0, start_at - time.time()))
    for i, (ts, v, ok) in enumerate(workload(seed, n)):
        recorder.record(PLUGIN, v, ok, now=ts)
        if i % flush_every == flush_every - 1 and recorder.flush() == 0:
            failed += 1
    while recorder._pending or recorder._unwritten:  # until stored (failed flushes kept theirs)
        if recorder.flush() == 0:
            failed += 1
        assert failed < 100
    assert not recorder._unwritten and not recorder._pending
    assert recorder.totals[PLUGIN].count == n  # counted once, failed flushes or not
    db.dispose()
    return failed


def stored_rows(url: str) -> list[tuple[int, str, datetime, int, int]]:
    db = Database(url)
    try:
        with db.read() as session:
            b = MetricBucketRow
            rows = session.execute(
                select(b.resolution, b.node_id, b.bucket_start, b.count, b.errors).where(
                    b.plugin_id == PLUGIN
                )
            ).all()
    finally:
        db.dispose()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def assert_exactly_stored(url: str, by_node: dict[str, list[tuple[float, float, bool]]]) -> None:
    """Every recorded call is stored exactly once, in its minute and in its hour, under its
    node; and the queries merging every node's rows give exact counts and percentiles."""
    calls = [c for cs in by_node.values() for c in cs]
    rows = stored_rows(url)
    for resolution in (60, 3600):
        assert sum(r[3] for r in rows if r[0] == resolution) == len(calls), resolution
        assert sum(r[4] for r in rows if r[0] == resolution) == sum(1 for c in calls if not c[2])
        for node, cs in by_node.items():
            assert sum(r[3] for r in rows if r[0] == resolution and r[1] == node) == len(cs)
    per_minute: dict[int, int] = {}
    for ts, _, _ in calls:
        per_minute[int(ts) // 60] = per_minute.get(int(ts) // 60, 0) + 1
    stored_minutes: dict[int, int] = {}
    for r in rows:
        if r[0] == 60:
            key = int(r[2].timestamp()) // 60
            stored_minutes[key] = stored_minutes.get(key, 0) + r[3]
    assert stored_minutes == per_minute

    db = Database(url)
    reader = MetricsRecorder(db, node_id="reader")
    values = [v for _, v, _ in calls]
    day = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        for start, end in (
            (day, day + timedelta(days=1)),  # whole hours: the hourly roll-ups
            (datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + SPAN_S + 60, UTC)),
        ):
            for granularity in ("minute", "hour", "day"):
                data = query_metrics(reader, PLUGIN, start, end, granularity).model_dump()
                m = data["metrics"]
                assert m["execution_count"] == len(calls)
                assert m["error_count"] == sum(1 for c in calls if not c[2])
                for q, key in (
                    (0.5, "p50_execution_time_ms"),
                    (0.95, "p95_execution_time_ms"),
                    (0.99, "p99_execution_time_ms"),
                ):
                    assert abs(m[key] - exact(values, q)) / exact(values, q) <= 0.01, key
                series = data["timeseries"]
                assert sum(p["execution_count"] for p in series) == len(calls)
                if granularity == "minute":  # one point a minute, every node's rows merged
                    assert {
                        int(p["timestamp"].timestamp()) // 60: p["execution_count"] for p in series
                    } == per_minute
    finally:
        db.dispose()


@pytest.mark.parametrize("nodes", [("node-a", "node-b"), ("same", "same")])
def test_two_replicas_in_threads_flushing_at_once_lose_nothing(store_url, nodes):
    """Two recorders on one database, flushing every few calls at the same moments. With
    different node ids they never touch the same row; given the same id (a misconfiguration)
    row locks and retried batches still keep every call."""
    n, flush_every = 1500, 9
    start_at = time.time() + 0.5
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(replica, store_url, node, seed, n, flush_every, start_at)
            for seed, node in enumerate(nodes, start=1)
        ]
        failed = [f.result(timeout=300) for f in futures]
    if nodes[0] != nodes[1]:
        assert failed == [0, 0]  # nothing to contend for: no flush fails
        by_node = {node: workload(seed, n) for seed, node in enumerate(nodes, start=1)}
    else:
        by_node = {"same": workload(1, n) + workload(2, n)}
    assert_exactly_stored(store_url, by_node)


@pytest.mark.process  # replica processes, on both backends already
def test_two_replica_processes_flushing_at_once_lose_nothing(store_url):
    """The same race between two OS processes, each a replica with its own node id."""
    n, flush_every = 1500, 7
    start_at = time.time() + 3.0  # both have imported everything by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.integration.test_metrics_store import replica; "
                "sys.exit(replica(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
                "int(sys.argv[5]), float(sys.argv[6])))",
                store_url,
                node,
                str(seed),
                str(n),
                str(flush_every),
                repr(start_at),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for seed, node in ((1, "node-a"), (2, "node-b"))
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode(errors="replace")  # exit code: failed flushes
    assert_exactly_stored(store_url, {"node-a": workload(1, n), "node-b": workload(2, n)})


def _break(db: Database, how: str) -> None:
    with db.transaction() as session:
        if how == "table_gone":
            session.execute(text("ALTER TABLE metric_buckets RENAME TO metric_buckets_away"))
        elif db.dialect == "sqlite":  # fails_midway: a later row of the batch is refused
            session.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON metric_buckets "
                    "WHEN NEW.plugin_id = 'plugin_poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
        else:
            session.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.plugin_id = 'plugin_poison' THEN RAISE EXCEPTION 'poison'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            session.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON metric_buckets "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )


def _repair(db: Database, how: str) -> None:
    with db.transaction() as session:
        if how == "table_gone":
            session.execute(text("ALTER TABLE metric_buckets_away RENAME TO metric_buckets"))
        else:
            session.execute(
                text("DROP TRIGGER poison" + (" ON metric_buckets" * (db.dialect == "postgresql")))
            )


@pytest.mark.parametrize("how", ["table_gone", "database_down", "fails_midway"])
def test_a_failed_flush_keeps_its_batch_for_the_next(store_url, how, caplog, tmp_path):
    """Flushes fail (the table renamed away; the database unreachable; a row refused after
    others of the batch were written), calls go on being recorded meanwhile, then storage
    comes back: every call is stored once, and the Prometheus totals counted each once."""
    db = Database(store_url)
    recorder = MetricsRecorder(db, node_id="node-a")
    calls = workload(7, 600)
    poisoned = workload(8, 40)
    caplog.set_level(logging.WARNING, logger="mlx_platform.metrics")

    def record(part: list[tuple[float, float, bool]], plugin_id: str = PLUGIN) -> None:
        for ts, v, ok in part:
            recorder.record(plugin_id, v, ok, now=ts)

    record(calls[:200])
    assert recorder.flush() > 0  # stored before the failure: the rows exist already
    record(calls[200:400])
    record(poisoned, "plugin_poison")
    if how == "database_down":
        down = (
            f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
            if db.dialect == "sqlite"
            else "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2"
        )
        recorder.db = Database(down)
    else:
        _break(db, how)
    assert recorder.flush() == 0
    record(calls[400:500])  # recorded while storage is broken
    assert recorder.flush() == 0
    warnings = [r for r in caplog.records if r.name == "mlx_platform.metrics"]
    assert len(warnings) == 1  # one line per failure streak, not one per failed flush
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in warnings)
    assert "\n" not in warnings[0].getMessage()
    assert recorder.snapshot()[PLUGIN].count == 500  # counted once, however often it failed
    if how == "database_down":
        recorder.db.dispose()
        recorder.db = db
    else:
        _repair(db, how)
    record(calls[500:])
    assert recorder.flush() > 0
    assert not recorder._unwritten
    assert recorder.totals[PLUGIN].count == len(calls)
    assert recorder.totals["plugin_poison"].count == len(poisoned)
    assert_exactly_stored(store_url, {"node-a": calls})
    stored = db.read
    with stored() as session:
        n = session.execute(
            text("SELECT sum(count) FROM metric_buckets WHERE plugin_id = 'plugin_poison'")
        ).scalar()
    assert n == 2 * len(poisoned)  # its minute rows and its hour rows
    db.dispose()


def test_eight_threads_record_while_another_flushes_in_a_loop(store_url):
    """The flush swaps the pending minutes while calls are being recorded into them: no call
    may land in a minute already on its way to storage (nor be lost between two threads'
    updates of one minute). Stored, queried and Prometheus figures are exact."""
    db = Database(store_url)
    recorder = MetricsRecorder(db, node_id="node-a")
    threads, rounds = 8, 30
    enough = threading.Event()
    flushes = 0
    counted = [[0, 0, 0] for _ in range(threads)]  # per caller: calls, errors, usage samples
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often

    def caller(k: int) -> None:
        """Records until the flusher has flushed `rounds` times (at most 300,000 calls)."""
        rng = random.Random(k)
        mine = counted[k]
        i = 0
        while (i < 2000 or not enough.is_set()) and i < 300_000:
            ok = i % 13 != k
            recorder.record(PLUGIN, rng.lognormvariate(2, 1), ok, now=T0 + (i % 200))
            mine[0] += 1
            mine[1] += 0 if ok else 1
            if i % 50 == 0:
                recorder.sample_usage(PLUGIN, 100.0 + k, 5.0, now=T0 + (i % 200))
                mine[2] += 1
            if i % 1000 == 999:
                time.sleep(0.001)  # let the flusher in, whatever the machine's load
            i += 1

    def flusher() -> None:
        nonlocal flushes
        try:
            while flushes < rounds:
                flushes += 1 if recorder.flush() else 0
                recorder.snapshot()  # a Prometheus scrape, meanwhile
        finally:
            enough.set()

    flush_thread = threading.Thread(target=flusher)
    flush_thread.start()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(caller, range(threads)))
    finally:
        enough.set()
        flush_thread.join(timeout=120)
        sys.setswitchinterval(old_interval)
    assert flushes >= 10  # the flushes did race the callers
    recorder.flush()
    total, errors, samples = (sum(c[j] for c in counted) for j in range(3))
    assert recorder.totals[PLUGIN].count == total
    assert recorder.totals[PLUGIN].errors == errors
    assert recorder.totals[PLUGIN].sketch.count == total
    rows = stored_rows(store_url)
    for resolution in (60, 3600):
        assert sum(r[3] for r in rows if r[0] == resolution) == total
        assert sum(r[4] for r in rows if r[0] == resolution) == errors
    data = query_metrics(
        recorder, PLUGIN, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC), "hour"
    )
    assert data.metrics.execution_count == total
    assert data.metrics.resource_usage.samples == samples
    db.dispose()


@pytest.mark.parametrize("granularity", ["minute", "hour", "day"])
@pytest.mark.parametrize(("offset_start", "offset_end"), [(0, 200), (5, 150), (23, 84)])
def test_each_point_has_the_percentiles_and_memory_of_its_own_bucket(
    recorded, granularity, offset_start, offset_end
):
    """Per point (issue 15's charts): the quantiles of that bucket's calls, within 1%, from
    hourly roll-ups and edge minutes alike; memory figures of its own samples only."""
    recorder, calls = recorded
    t0 = calls[0][0]
    start, end = t0 + timedelta(minutes=offset_start), t0 + timedelta(minutes=offset_end)
    samples = {
        start + timedelta(minutes=k): 50.0 + k for k in range(0, offset_end - offset_start, 7)
    }
    for at, mb in samples.items():
        recorder.sample_usage(PLUGIN, mb, 1.0, now=at.timestamp())
        recorder.sample_usage(PLUGIN, mb / 2, 1.0, now=at.timestamp() + 1)
    recorder.flush()
    step = {"minute": 60, "hour": 3600, "day": 86400}[granularity]

    def bucket(ts: datetime) -> datetime:
        return datetime.fromtimestamp(int(ts.timestamp()) // step * step, UTC)

    points = query_metrics(recorder, PLUGIN, start, end, granularity).model_dump()["timeseries"]
    assert points
    for p in points:
        values = [v for ts, v, _ in calls if start <= ts < end and bucket(ts) == p["timestamp"]]
        assert p["execution_count"] == len(values)
        for q, key in (
            (0.5, "p50_execution_time_ms"),
            (0.95, "p95_execution_time_ms"),
            (0.99, "p99_execution_time_ms"),
        ):
            assert abs(p[key] - exact(values, q)) / exact(values, q) <= 0.01, (p, key)
        mine = [mb for at, mb in samples.items() if bucket(at) == p["timestamp"]]
        if mine:
            assert p["peak_memory_mb"] == pytest.approx(max(mine))
            assert p["avg_memory_mb"] == pytest.approx(sum(mine) * 0.75 / len(mine))
        else:
            assert p["avg_memory_mb"] is None and p["peak_memory_mb"] is None
