"""Metrics recorded, flushed to a real database (a SQLite file, or PostgreSQL when
`MLX_TEST_DATABASE=postgres`), and merged back at every granularity."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlx_platform.core.metrics import MetricsRecorder, _Minute, query_metrics
from mlx_platform.storage import Database
from tests.conftest import on_postgres, postgres_url_for

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
        slot = _Minute()
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
    data = query_metrics(recorder, PLUGIN, start, end, granularity)
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
    data = query_metrics(recorder, PLUGIN, later, later + timedelta(hours=5), "hour")
    assert data["metrics"]["execution_count"] == 0
    assert data["metrics"]["p95_execution_time_ms"] == 0
    assert data["timeseries"] == []
