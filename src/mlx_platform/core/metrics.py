"""Invocation metrics: recorded per plugin per minute, flushed to storage, merged on read.

Recording touches memory only (one dict lookup and a sketch update, under a lock); `flush`
moves what was recorded into `metric_buckets`, into this replica's own rows (`node_id` is part
of the key), adding to what those rows hold. Replicas therefore never write the same row, and
reads merge the rows of every replica (and of earlier runs) into minutes, hours or days.

A flush that fails (database down, any error) keeps its batch: the next flush writes it,
merged with whatever was recorded meanwhile, so nothing counted is lost while the process
lives. The one loss left is a commit that succeeded on the server but whose answer never came
back: the batch is written again (counted twice) on the next flush.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NotRequired, TypedDict

from pydantic import TypeAdapter

from mlx_platform.core.sketch import LatencySketch
from mlx_platform.storage import Database, MetricBucketRow
from mlx_platform.storage.availability import reason_of
from mlx_platform.storage.repositories import MetricRepository
from mlx_platform.wire import (
    MINUTE_SERIES_SKETCH_LIMIT,
    MetricsFigures,
    MetricsReport,
    PerformanceMetrics,
    ResourceUsageMetrics,
    TimeRange,
    TimeseriesPoint,
)

log = logging.getLogger("mlx_platform.metrics")
_time = time.time

GRANULARITY_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(slots=True)
class Figures:
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
            if self.sketch.count:
                self.sketch.merge_json(row[9])
            else:  # a new object of its own: taken as it is (a point is mostly one row)
                self.sketch = LatencySketch.from_json(row[9])

    def merge(self, other: Figures) -> None:
        """Add another span's figures to these (`other` is left as it is)."""
        self.count += other.count
        self.errors += other.errors
        self.sum_ms += other.sum_ms
        if other.sketch.count:
            self.sketch.merge(other.sketch)
        self.mem_samples += other.mem_samples
        self.mem_sum_mb += other.mem_sum_mb
        self.mem_peak_mb = max(self.mem_peak_mb, other.mem_peak_mb)
        self.cpu_samples += other.cpu_samples
        self.cpu_sum_percent += other.cpu_sum_percent

    def copy(self) -> Figures:
        out = Figures()
        out.merge(self)
        return out


class MetricsRecorder:
    """This replica's metrics: recorded in memory, flushed into rows keyed by `node_id`.

    What was recorded goes through two states, both guarded by `_lock`:

    - `_pending`: recorded since the last flush (or snapshot), not yet counted in `totals`;
    - `_unwritten`: counted in `totals`, not yet stored (a flush in progress, or one that
      failed and left its batch for the next).

    `totals` (the Prometheus counters, since this process started) count an invocation when
    it leaves `_pending`, once, and never again: a batch a flush failed to store goes back to
    `_unwritten`, never to `_pending`. So the counters are exact whether or not storage
    works, and a retried flush cannot count anything twice.
    """

    def __init__(self, db: Database, node_id: str = "") -> None:
        self.db = db
        self.node_id = node_id
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], Figures] = {}
        self._unwritten: dict[tuple[str, int], Figures] = {}
        # Since this process started, per plugin: what Prometheus scrapes (counters only grow).
        self.totals: dict[str, Figures] = {}
        # plugins forgotten while a flush was writing: its batch must not bring them back
        self._forgotten: set[str] = set()
        self._flush_lock = threading.Lock()
        self._failing = False  # the last flush failed (log once per failure streak)
        # A flush's batch while it is being written, and how many writes have started: a
        # read merges what is not stored yet with the stored rows, and must not count a
        # batch twice (in memory and, once its write commits, in the rows it read).
        self._writing = False
        self._writes_started = 0
        self._written = threading.Condition(self._lock)

    def record(
        self, plugin_id: str, duration_ms: float, ok: bool, now: float | None = None
    ) -> None:
        """Count one invocation (at `now`, seconds since the epoch; tests pass it). Memory
        only; the update happens under the lock the flush swaps `_pending` under, so no call
        lands in a minute that is already on its way to storage."""
        key = (plugin_id, int(_time() if now is None else now) // 60)
        # acquire/release rather than `with`: a tenth of a microsecond less on the hot path
        lock = self._lock
        lock.acquire()
        try:
            slot = self._pending.get(key)
            if slot is None:
                slot = self._pending[key] = Figures()
            slot.count += 1
            slot.sum_ms += duration_ms
            if not ok:
                slot.errors += 1
            slot.sketch.record(duration_ms)
        finally:
            lock.release()

    def sample_usage(
        self, plugin_id: str, memory_mb: float, cpu_percent: float, now: float | None = None
    ) -> None:
        key = (plugin_id, int(_time() if now is None else now) // 60)
        with self._lock:
            slot = self._pending.get(key)
            if slot is None:
                slot = self._pending[key] = Figures()
            slot.mem_samples += 1
            slot.mem_sum_mb += memory_mb
            if memory_mb > slot.mem_peak_mb:
                slot.mem_peak_mb = memory_mb
            slot.cpu_samples += 1
            slot.cpu_sum_percent += cpu_percent

    def _count_pending(self) -> None:
        """Move `_pending` into `totals` and `_unwritten`. The caller holds `_lock`."""
        pending, self._pending = self._pending, {}
        for key, m in pending.items():
            total = self.totals.get(key[0])
            if total is None:
                total = self.totals[key[0]] = Figures()
            total.count += m.count
            total.errors += m.errors
            total.sum_ms += m.sum_ms
            if m.sketch.count:
                total.sketch.merge(m.sketch)
            kept = self._unwritten.get(key)
            if kept is None:
                self._unwritten[key] = m
            else:
                kept.merge(m)

    def snapshot(self) -> dict[str, Figures]:
        """A copy of `totals`, up to the last recorded call (no storage involved)."""
        with self._lock:
            self._count_pending()
            return {pid: t.copy() for pid, t in self.totals.items()}

    def flush(self) -> int:
        """Add what was recorded to this replica's stored buckets. Returns the number of
        (plugin, minute) entries written; 0 when there was nothing, or when storage failed
        (one warning logged, the batch kept for the next flush)."""
        with self._flush_lock:
            with self._lock:
                self._count_pending()
                batch, self._unwritten = self._unwritten, {}
                self._forgotten.clear()
                if not batch:
                    return 0
                self._writing = True
                self._writes_started += 1
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the batch, retry later
                with self._lock:
                    self._writing = False
                    self._written.notify_all()
                    for key, m in batch.items():
                        if key[0] in self._forgotten:
                            continue
                        later = self._unwritten.get(key)
                        if later is not None:  # counted by a snapshot during the write
                            m.merge(later)
                        self._unwritten[key] = m
                    kept = len(self._unwritten)
                # once per failure streak: an outage (already logged by the storage layer
                # when it starts) must not add a line every flush interval
                if not self._failing:
                    log.warning(
                        "metrics flush failed (%s); %d plugin-minutes kept for the next flush",
                        reason_of(exc),
                        kept,
                    )
                self._failing = True
                return 0
            with self._lock:
                self._writing = False
                self._written.notify_all()
            if self._failing:
                log.info("metrics flush works again: the kept plugin-minutes were written")
            self._failing = False
            return len(batch)

    def _write(self, batch: dict[tuple[str, int], Figures]) -> None:
        """One transaction: each minute into its minute row and its hour's roll-up row."""
        buckets: dict[tuple[str, int, datetime], Figures] = {}
        for (plugin_id, minute), m in batch.items():
            buckets[(plugin_id, 60, datetime.fromtimestamp(minute * 60, UTC))] = m
            hour = (plugin_id, 3600, datetime.fromtimestamp(minute // 60 * 3600, UTC))
            rollup = buckets.get(hour)
            if rollup is None:
                rollup = buckets[hour] = Figures()
            rollup.merge(m)  # a new object: the batch stays as it was, should this fail
        with self.db.transaction() as session:
            repo = MetricRepository(session)
            # in key order: two writers of one node id (a misconfiguration) lock rows in the
            # same order and cannot deadlock
            for (plugin_id, resolution, start), m in sorted(buckets.items()):
                _add_to_bucket(repo, self.node_id, plugin_id, resolution, start, m)

    def unstored(self, plugin_id: str) -> tuple[dict[datetime, Figures], int]:
        """What was recorded for the plugin and is not stored yet, by minute (copies), and a
        token for `stored_since`. Waits for a write in progress (a flush takes milliseconds):
        its batch is in neither place that could be read consistently meanwhile."""
        with self._written:
            self._written.wait_for(lambda: not self._writing, timeout=10)
            out: dict[datetime, Figures] = {}
            for source in (self._unwritten, self._pending):
                for (pid, minute), m in source.items():
                    if pid != plugin_id:
                        continue
                    at = datetime.fromtimestamp(minute * 60, UTC)
                    kept = out.get(at)
                    if kept is None:
                        out[at] = m.copy()
                    else:
                        kept.merge(m)
            return out, self._writes_started

    def stored_since(self, token: int) -> bool:
        """A write started since `unstored` gave this token: what it copied may be stored."""
        with self._lock:
            return self._writes_started != token

    def forget(self, plugin_id: str) -> None:
        with self._lock:
            self.totals.pop(plugin_id, None)
            for d in (self._pending, self._unwritten):
                for key in [k for k in d if k[0] == plugin_id]:
                    del d[key]
            self._forgotten.add(plugin_id)


def _add_to_bucket(
    repo: MetricRepository,
    node_id: str,
    plugin_id: str,
    resolution: int,
    start: datetime,
    m: Figures,
) -> None:
    """Add `m` to this node's row of the bucket. Only this node writes that row; the row lock
    (PostgreSQL) covers two processes that were given the same node id."""
    row = repo.get(plugin_id, resolution, start, node_id, for_update=True)
    if row is None:
        row = MetricBucketRow(
            plugin_id=plugin_id,
            resolution=resolution,
            bucket_start=start,
            node_id=node_id,
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
) -> MetricsReport:
    """The spec's metrics answer for [start, end), merged from stored buckets.

    Whole hours inside the range come from the hourly roll-ups (24 sketches for a day, not
    1,440); the partial hours at either edge from minute buckets. Hour and day points are
    built from those same rows, sketches included, so each point has its quantiles. A minute
    series reads the minute buckets' sketches only when the range holds at most
    MINUTE_SERIES_SKETCH_LIMIT of them; beyond, its counts and sums only, and its points'
    quantiles are null.
    """
    first = floor_time(start, "minute")
    h0, h1 = _ceil_hour(first), floor_time(end, "hour")
    minute_buckets = -(-int((end - first).total_seconds()) // 60)  # ceil
    quantiles = granularity != "minute" or minute_buckets <= MINUTE_SERIES_SKETCH_LIMIT
    # Stored rows plus what this replica recorded and has not stored yet: a read writes
    # nothing. Read again in the rare case a flush started meanwhile (it may have stored
    # what was copied from memory; counted twice otherwise).
    whole: list[Any] = []
    edges: list[Any] = []
    for _attempt in range(5):
        memory, token = recorder.unstored(plugin_id)
        with recorder.db.read() as session:
            repo = MetricRepository(session)
            if granularity == "minute" and quantiles:
                pass  # the minute rows, sketches included, are the range's figures too
            elif h0 < h1:
                whole = repo.rows(plugin_id, 3600, h0, h1, sketch=True)
                edges = repo.rows(plugin_id, 60, first, h0, sketch=True) + repo.rows(
                    plugin_id, 60, h1, end, sketch=True
                )
            else:
                whole, edges = [], repo.rows(plugin_id, 60, first, end, sketch=True)
            if granularity == "minute":
                series_rows = repo.rows(plugin_id, 60, first, end, sketch=quantiles)
            else:
                series_rows = [*edges, *whole]
        if not recorder.stored_since(token):
            break
    memory = {at: m for at, m in memory.items() if first <= at < end}
    series: dict[datetime, Figures] = {}
    # A minute series without sketches: a minute of one row (one replica) is its point as it
    # is, without Figures in between (a day by minute is 1,440 of them)
    alone: dict[datetime, Any] = {}

    def figures_at(ts: datetime) -> Figures:
        agg = series.get(ts)
        if agg is None:
            agg = series[ts] = Figures()
            if ts in alone:
                agg.add(alone.pop(ts))
        return agg

    for row in series_rows:
        ts = row[0] if granularity == "minute" else floor_time(row[0], granularity)
        if not quantiles and ts not in series and ts not in alone:
            alone[ts] = row
        else:
            figures_at(ts).add(row)  # with its sketch when read
    total = Figures()
    if granularity == "minute" and not quantiles:
        for row in (*whole, *edges):
            total.add(row)
    else:  # the points hold every row of the range, sketches decoded once
        for agg in series.values():
            total.merge(agg)
    for at, m in memory.items():
        total.merge(m)
        ts = at if granularity == "minute" else floor_time(at, granularity)
        figures_at(ts).merge(m)
    points = [(ts, agg) for ts, agg in series.items() if agg.count or agg.mem_samples]
    points += [(ts, row) for ts, row in alone.items() if row[1] or row[4]]
    points.sort(key=itemgetter(0))
    return MetricsReport(
        plugin_id=plugin_id,
        time_range=TimeRange(start=start, end=end),
        granularity=granularity,
        metrics=_figures(total),
        timeseries=_POINTS.validate_python(
            [
                _point(ts, agg, quantiles) if isinstance(agg, Figures) else _row_point(ts, agg)
                for ts, agg in points
            ]
        ),
    )


def _figures(total: Figures) -> MetricsFigures:
    """The range's figures: counts, rates and latency quantiles (zeros when nothing ran, but
    the success rate, which is None: a rate of no calls is not 0)."""
    count = total.count
    return MetricsFigures(
        execution_count=count,
        success_rate=_r((count - total.errors) / count, 6) if count else None,
        avg_execution_time_ms=_r(total.sum_ms / count) if count else 0.0,
        p50_execution_time_ms=_r(total.sketch.quantile(0.50)),
        p95_execution_time_ms=_r(total.sketch.quantile(0.95)),
        p99_execution_time_ms=_r(total.sketch.quantile(0.99)),
        error_count=total.errors,
        resource_usage=ResourceUsageMetrics(
            avg_memory_mb=_r(total.mem_sum_mb / total.mem_samples) if total.mem_samples else 0.0,
            peak_memory_mb=_r(total.mem_peak_mb),
            avg_cpu_percent=_r(total.cpu_sum_percent / total.cpu_samples)
            if total.cpu_samples
            else 0.0,
            samples=total.mem_samples,
        ),
    )


# A series may hold 50,000 points: validated as one list (pydantic-core builds every model in
# one call), a quarter cheaper than a model constructor call per point.
_POINTS = TypeAdapter(list[TimeseriesPoint])


class _Point(TypedDict):
    """One TimeseriesPoint's fields, as _POINTS validates them."""

    timestamp: datetime
    execution_count: int
    avg_execution_time_ms: float
    success_rate: float | None
    error_count: int
    p50_execution_time_ms: NotRequired[float]  # absent: null
    p95_execution_time_ms: NotRequired[float]
    p99_execution_time_ms: NotRequired[float]
    avg_memory_mb: NotRequired[float]
    peak_memory_mb: NotRequired[float]


_QS = (0.50, 0.95, 0.99)


def _point(ts: datetime, agg: Figures, quantiles: bool) -> _Point:
    """One point; quantiles when asked and the bucket's calls are in its sketch (a minute
    series past MINUTE_SERIES_SKETCH_LIMIT decodes none: null, never 0). Fields that are
    null are left out (their default): a day by minute validates 1,440 points."""
    point = _scalar_point(
        ts, agg.count, agg.errors, agg.sum_ms, agg.mem_samples, agg.mem_sum_mb, agg.mem_peak_mb
    )
    if quantiles and agg.count and agg.sketch.count:
        p50, p95, p99 = agg.sketch.quantiles(_QS)
        point["p50_execution_time_ms"] = _r(p50)
        point["p95_execution_time_ms"] = _r(p95)
        point["p99_execution_time_ms"] = _r(p99)
    return point


def _row_point(ts: datetime, row: Any) -> _Point:
    """`_point(ts, <the Figures of that one row>, False)`, from the row's scalars
    (MetricRepository.rows: bucket_start, count, errors, sum_ms, mem_samples, mem_sum_mb,
    mem_peak_mb, ...), as Figures.add takes them."""
    return _scalar_point(ts, row[1], row[2], 0.0 + row[3], row[4], 0.0 + row[5], max(0.0, row[6]))


def _scalar_point(
    ts: datetime,
    count: int,
    errors: int,
    sum_ms: float,
    mem_samples: int,
    mem_sum_mb: float,
    mem_peak_mb: float,
) -> _Point:
    """A point's fields but its quantiles (`_point`, `_row_point`)."""
    point: _Point = {
        "timestamp": ts,
        "execution_count": count,
        "avg_execution_time_ms": _r(sum_ms / count) if count else 0.0,
        "success_rate": _r((count - errors) / count, 6) if count else None,
        "error_count": errors,
    }
    if mem_samples:
        point["avg_memory_mb"] = _r(mem_sum_mb / mem_samples)
        point["peak_memory_mb"] = _r(mem_peak_mb)
    return point


def recent_performance(
    recorder: MetricsRecorder, plugin_id: str, window: timedelta
) -> PerformanceMetrics:
    """`performance_metrics` of the plugin detail: the last `window`, measured (no calls: zero
    counts and null rates)."""
    end = datetime.now(UTC)
    m = query_metrics(recorder, plugin_id, end - window, end + timedelta(minutes=1), "day").metrics
    count = m.execution_count
    return PerformanceMetrics(
        execution_count=count,
        avg_execution_time_ms=m.avg_execution_time_ms,
        success_rate=m.success_rate,
        error_rate=_r(m.error_count / count, 6) if count else None,
        throughput_ops_per_second=_r(count / window.total_seconds(), 6),
        window_seconds=int(window.total_seconds()),
    )
