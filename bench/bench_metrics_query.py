"""A metrics query over one day at minute granularity, from stored minute buckets."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Figure
from sqlalchemy import text

from mlx_platform.core.metrics import Figures, MetricsRecorder, query_metrics
from mlx_platform.storage import Database

PLUGIN = "plugin_bench_001"


def fill_day(db: Database, end: datetime) -> None:
    """A day of invocations, 50 a minute of lognormal latency, recorded through the recorder
    (so the stored minute buckets and hourly roll-ups are the ones the service writes)."""
    rng = random.Random(1)
    start = end - timedelta(days=1)
    recorder = MetricsRecorder(db)
    for minute in range(1440):
        slot = Figures()
        for _ in range(50):
            v = rng.lognormvariate(3, 1)
            slot.count += 1
            slot.sum_ms += v
            slot.sketch.record(v)
        slot.errors = 1
        slot.mem_samples, slot.mem_sum_mb, slot.mem_peak_mb = 6, 600.0, 110.0
        slot.cpu_samples, slot.cpu_sum_percent = 6, 30.0
        recorder._pending[(PLUGIN, int((start + timedelta(minutes=minute)).timestamp()) // 60)] = (
            slot
        )
    recorder.flush()


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'm.db'}")
        db.migrate()
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        fill_day(db, end)
        recorder = MetricsRecorder(db)
        start = end - timedelta(days=1)

        def raw_fetch() -> None:
            with db.read() as session:
                session.execute(
                    text(
                        "SELECT * FROM metric_buckets "
                        "WHERE plugin_id = :p AND resolution = 60 AND bucket_start >= :s"
                    ),
                    {"p": PLUGIN, "s": start.replace(tzinfo=None)},
                ).fetchall()

        def query() -> None:
            data = query_metrics(recorder, PLUGIN, start, end, "minute")
            assert data.metrics.execution_count == 1440 * 50

        times, base = [], []
        for _ in range(3):
            query()
        for _ in range(15):
            t0 = time.perf_counter()
            raw_fetch()
            base.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            query()
            times.append((time.perf_counter() - t0) * 1000)
        db.dispose()
    return [
        Figure(
            "metrics_query_day_by_minute",
            statistics.median(times),
            "ms",
            20.0,
            statistics.median(base),
            "(raw SELECT of the same rows)",
        )
    ]


if __name__ == "__main__":
    for f in run():
        print(f.line())
