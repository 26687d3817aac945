"""A point of a minute series without sketches is made from its one row directly
(core/metrics.py `_row_point`): the same point as from that row's Figures (`_point`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlx_platform.core.metrics import Figures, _point, _row_point

TS = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "row",
    [
        (TS, 50, 1, 1234.5678, 6, 600.0, 110.0, 6, 30.0),  # calls and memory samples
        (TS, 3, 3, 7, 0, 0.0, 0.0, 0, 0.0),  # every call failed, integer sum, no memory
        (TS, 0, 0, 0.0, 4, 410.25, 130.5, 4, 12.0),  # memory samples only
        (TS, 1, 0, 0.0004, 1, 99.99999, 99.99999, 1, 0.5),  # rounding at the edges
    ],
)
def test_a_rows_point_is_the_point_of_its_figures(row: tuple) -> None:
    figures = Figures()
    figures.add(row)
    assert _row_point(TS, row) == _point(TS, figures, False)


def test_a_minute_stored_and_still_in_memory_is_one_point(tmp_path) -> None:
    """A day by minute (no sketches): a minute whose calls are partly stored, partly only in
    this replica's memory, is one point counting both; a stored minute alone is its row's."""
    from datetime import timedelta

    from mlx_platform.core.metrics import MetricsRecorder, query_metrics
    from mlx_platform.storage import Database

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    try:
        recorder = MetricsRecorder(db, node_id="node-a")
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        minute = (end - timedelta(minutes=1)).timestamp()
        earlier = (end - timedelta(minutes=5)).timestamp()
        for _ in range(3):
            recorder.record("plugin_x_001", 2.0, True, now=minute)
        for _ in range(4):
            recorder.record("plugin_x_001", 3.0, False, now=earlier)
        recorder.flush()
        for _ in range(2):
            recorder.record("plugin_x_001", 5.0, True, now=minute)  # not stored yet
        report = query_metrics(recorder, "plugin_x_001", end - timedelta(days=1), end, "minute")
        points = {int(p.timestamp.timestamp()): p for p in report.timeseries}
        assert set(points) == {int(minute) // 60 * 60, int(earlier) // 60 * 60}
        now_point = points[int(minute) // 60 * 60]
        assert (now_point.execution_count, now_point.error_count) == (5, 0)
        assert now_point.avg_execution_time_ms == pytest.approx((3 * 2.0 + 2 * 5.0) / 5)
        old_point = points[int(earlier) // 60 * 60]
        assert (old_point.execution_count, old_point.error_count) == (4, 4)
        assert old_point.success_rate == 0.0 and old_point.p50_execution_time_ms is None
        assert report.metrics.execution_count == 9
    finally:
        db.dispose()
