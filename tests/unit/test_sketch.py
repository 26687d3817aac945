import random

import pytest

from mlx_platform.core.sketch import LatencySketch


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantiles_within_one_percent(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.2) for _ in range(20000)]
    sk = LatencySketch()
    for v in values:
        sk.record(v)
    exact = exact_quantile(values, q)
    assert abs(sk.quantile(q) - exact) / exact <= 0.01


def test_merged_sketches_answer_like_one() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0.1, 500) for _ in range(9000)]
    parts = [LatencySketch() for _ in range(3)]
    for i, v in enumerate(values):
        parts[i % 3].record(v)
    merged = LatencySketch()
    for p in parts:
        merged.merge(LatencySketch.from_json(p.to_json()))
    assert merged.count == len(values)
    exact = exact_quantile(values, 0.99)
    assert abs(merged.quantile(0.99) - exact) / exact <= 0.01


def test_empty_sketch_reads_zero() -> None:
    assert LatencySketch().quantile(0.95) == 0.0
    assert LatencySketch.from_json({}).count == 0


def test_zero_durations_count() -> None:
    sk = LatencySketch()
    for _ in range(10):
        sk.record(0.0)
    sk.record(5.0)
    assert sk.count == 11
    assert sk.quantile(0.5) == 0.0
    assert sk.quantile(1.0) == pytest.approx(5.0, rel=0.01)


def test_several_quantiles_at_once_read_like_one_at_a_time() -> None:
    """`quantiles` (one sort for a point's p50/p95/p99) answers what `quantile` does, zero
    bucket, clamping to min/max and empty sketches included."""
    rng = random.Random(3)
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    for _ in range(2000):
        sk = LatencySketch()
        for _ in range(rng.randint(0, 60)):
            sk.record(rng.choice([0.0, 1e-7, rng.lognormvariate(1, 2)]))
        assert sk.quantiles(qs) == [sk.quantile(q) for q in qs], sk.to_json()


def test_merging_a_stored_sketch_is_merging_it_decoded() -> None:
    """`merge_json` (a stored sketch added without decoding it first) gives what `merge` of
    the decoded sketch gives: buckets, zero bucket, count, min and max; an empty or absent
    stored sketch changes nothing."""
    rng = random.Random(7)
    parts = []
    for n in (40, 1, 300):
        sk = LatencySketch()
        for _ in range(n):
            sk.record(rng.lognormvariate(2, 1.5))
        sk.record(0.0)
        parts.append(sk.to_json())
    parts += [LatencySketch().to_json(), {}, None]
    decoded, direct = LatencySketch(), LatencySketch()
    direct.record(5.0)
    decoded.record(5.0)
    for data in parts:
        decoded.merge(LatencySketch.from_json(data))
        direct.merge_json(data)
    assert direct.buckets == decoded.buckets
    assert (direct.zero, direct.count, direct.min, direct.max) == (
        decoded.zero,
        decoded.count,
        decoded.min,
        decoded.max,
    )
    assert direct.quantiles((0.5, 0.95, 0.99)) == decoded.quantiles((0.5, 0.95, 0.99))
