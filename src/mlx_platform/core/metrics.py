"""Invocation metrics: recorded per plugin per minute, flushed to storage, merged on read.

Recording touches memory only (one dict lookup and a sketch update); `flush` moves finished
and current minutes into `metric_buckets`, adding to what is stored, so several replicas (or
restarts) add up. Queries merge the stored minutes into minutes, hours or days.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mlx_platform.core.sketch import LatencySketch
from mlx_platform.storage import Database, MetricBucketRow
from mlx_platform.storage.repositories import MetricRepository

GRANULARITY_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass
class _Minute:
    """Figures of one plugin over a span: a minute being recorded, or a merge of stored rows."""

    count: int = 0
    errors: int = 0
    sum_ms: float = 0.0
    sketch: LatencySketch = field(default_factory=LatencySketch)
    mem_samples: int = 0
    mem_sum_mb: float = 0.0
    mem_peak_mb: float = 0.0
    cpu_samples: int = 0
    cpu_sum_percent: float = 0.0

    def add(self, row: Any) -> None:
        """Add a row of MetricRepository.rows (its scalars, and the sketch when present)."""
        self.count += row[1]
        self.errors += row[2]
        self.sum_ms += row[3]
        self.mem_samples += row[4]
        self.mem_sum_mb += row[5]
        self.mem_peak_mb = max(self.mem_peak_mb, row[6])
        self.cpu_samples += row[7]
        self.cpu_sum_percent += row[8]
        if len(row) > 9 and row[9]:
            self.sketch.merge(LatencySketch.from_json(row[9]))


class MetricsRecorder:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[tuple[str, int], _Minute] = {}
        self._lock = threading.Lock()
        # Since this process started, per plugin: what Prometheus scrapes (counters only grow).
        self.totals: dict[str, _Minute] = {}
        self._flush_lock = threading.Lock()

    def _slot(self, plugin_id: str) -> _Minute:
        key = (plugin_id, int(time.time()) // 60)
        slot = self._pending.get(key)
        if slot is None:
            with self._lock:
                slot = self._pending.setdefault(key, _Minute())
        return slot

    def record(self, plugin_id: str, duration_ms: float, ok: bool) -> None:
        """Count one invocation. Cheap: memory only."""
        slot = self._slot(plugin_id)
        slot.count += 1
        slot.sum_ms += duration_ms
        if not ok:
            slot.errors += 1
        slot.sketch.record(duration_ms)

    def sample_usage(self, plugin_id: str, memory_mb: float, cpu_percent: float) -> None:
        slot = self._slot(plugin_id)
        slot.mem_samples += 1
        slot.mem_sum_mb += memory_mb
        slot.mem_peak_mb = max(slot.mem_peak_mb, memory_mb)
        slot.cpu_samples += 1
        slot.cpu_sum_percent += cpu_percent

    def flush(self) -> int:
        """Add what was recorded to the stored buckets. Returns the number of buckets written."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        for (plugin_id, _minute), m in pending.items():
            total = self.totals.setdefault(plugin_id, _Minute())
            total.count += m.count
            total.errors += m.errors
            total.sum_ms += m.sum_ms
            total.sketch.merge(m.sketch)
        with self.db.transaction() as session:
            repo = MetricRepository(session)
            for (plugin_id, minute), m in pending.items():
                minute_start = datetime.fromtimestamp(minute * 60, UTC)
                hour_start = datetime.fromtimestamp(minute // 60 * 3600, UTC)
                for resolution, bucket_start in ((60, minute_start), (3600, hour_start)):
                    _add_to_bucket(repo, plugin_id, resolution, bucket_start, m)
        return len(pending)

    def forget(self, plugin_id: str) -> None:
        self.totals.pop(plugin_id, None)
        with self._lock:
            for key in [k for k in self._pending if k[0] == plugin_id]:
                del self._pending[key]


def _add_to_bucket(
    repo: MetricRepository, plugin_id: str, resolution: int, start: datetime, m: _Minute
) -> None:
    row = repo.get(plugin_id, resolution, start)
    if row is None:
        row = MetricBucketRow(
            plugin_id=plugin_id,
            resolution=resolution,
            bucket_start=start,
            count=0,
            errors=0,
            sum_ms=0.0,
            sketch={},
            mem_samples=0,
            mem_sum_mb=0.0,
            mem_peak_mb=0.0,
            cpu_samples=0,
            cpu_sum_percent=0.0,
        )
        repo.add(row)
    if m.count:
        sk = LatencySketch.from_json(row.sketch)
        sk.merge(m.sketch)
        row.sketch = sk.to_json()
    row.count += m.count
    row.errors += m.errors
    row.sum_ms += m.sum_ms
    row.mem_samples += m.mem_samples
    row.mem_sum_mb += m.mem_sum_mb
    row.mem_peak_mb = max(row.mem_peak_mb, m.mem_peak_mb)
    row.cpu_samples += m.cpu_samples
    row.cpu_sum_percent += m.cpu_sum_percent


def _r(value: float, nd: int = 3) -> float:
    return round(value, nd)


def floor_time(t: datetime, granularity: str) -> datetime:
    step = GRANULARITY_SECONDS[granularity]
    ts = int(t.timestamp()) // step * step
    return datetime.fromtimestamp(ts, UTC)


def _ceil_hour(t: datetime) -> datetime:
    floor = floor_time(t, "hour")
    return floor if floor == t else floor + timedelta(hours=1)


def query_metrics(
    recorder: MetricsRecorder, plugin_id: str, start: datetime, end: datetime, granularity: str
) -> dict[str, Any]:
    """The spec's metrics answer for [start, end), merged from stored buckets.

    Whole hours inside the range come from the hourly roll-ups (24 sketches for a day, not
    1,440); the partial hours at either edge from minute buckets. A minute-granularity series
    reads the minute buckets' counts and sums only, never their sketches.
    """
    recorder.flush()
    first = floor_time(start, "minute")
    h0, h1 = _ceil_hour(first), floor_time(end, "hour")
    with recorder.db.read() as session:
        repo = MetricRepository(session)
        if h0 < h1:
            whole = repo.rows(plugin_id, 3600, h0, h1, sketch=True)
            edges = repo.rows(plugin_id, 60, first, h0, sketch=True) + repo.rows(
                plugin_id, 60, h1, end, sketch=True
            )
        else:
            whole, edges = [], repo.rows(plugin_id, 60, first, end, sketch=True)
        if granularity == "minute":
            series_rows = repo.rows(plugin_id, 60, first, end, sketch=False)
        else:
            series_rows = [*edges, *whole]
    total = _Minute()
    for row in (*whole, *edges):
        total.add(row)
    series: dict[datetime, _Minute] = {}
    for row in series_rows:
        ts = row[0] if granularity == "minute" else floor_time(row[0], granularity)
        agg = series.get(ts)
        if agg is None:
            agg = series[ts] = _Minute()
        agg.add(row[:9])
    ok = total.count - total.errors
    figures = {
        "execution_count": total.count,
        "success_rate": _r(ok / total.count, 6) if total.count else 0.0,
        "avg_execution_time_ms": _r(total.sum_ms / total.count) if total.count else 0.0,
        "p50_execution_time_ms": _r(total.sketch.quantile(0.50)),
        "p95_execution_time_ms": _r(total.sketch.quantile(0.95)),
        "p99_execution_time_ms": _r(total.sketch.quantile(0.99)),
        "error_count": total.errors,
        "resource_usage": {
            "avg_memory_mb": _r(total.mem_sum_mb / total.mem_samples) if total.mem_samples else 0.0,
            "peak_memory_mb": _r(total.mem_peak_mb),
            "avg_cpu_percent": _r(total.cpu_sum_percent / total.cpu_samples)
            if total.cpu_samples
            else 0.0,
            "samples": total.mem_samples,
        },
    }
    timeseries = [
        {
            "timestamp": ts,
            "execution_count": agg.count,
            "avg_execution_time_ms": _r(agg.sum_ms / agg.count) if agg.count else 0.0,
            "success_rate": _r((agg.count - agg.errors) / agg.count, 6) if agg.count else 0.0,
            "error_count": agg.errors,
        }
        for ts, agg in sorted(series.items())
        if agg.count or agg.mem_samples
    ]
    return {
        "plugin_id": plugin_id,
        "time_range": {"start": start, "end": end},
        "granularity": granularity,
        "metrics": figures,
        "timeseries": timeseries,
    }


def recent_performance(
    recorder: MetricsRecorder, plugin_id: str, window: timedelta
) -> dict[str, Any]:
    """`performance_metrics` of the plugin detail: the last `window`, measured, else zeros."""
    end = datetime.now(UTC)
    data = query_metrics(recorder, plugin_id, end - window, end + timedelta(minutes=1), "day")
    m = data["metrics"]
    count = m["execution_count"]
    return {
        "execution_count": count,
        "avg_execution_time_ms": m["avg_execution_time_ms"],
        "success_rate": m["success_rate"],
        "error_rate": _r(m["error_count"] / count, 6) if count else 0.0,
        "throughput_ops_per_second": _r(count / window.total_seconds(), 6),
        "window_seconds": int(window.total_seconds()),
    }
