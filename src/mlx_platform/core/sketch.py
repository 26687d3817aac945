"""A mergeable latency sketch with bounded relative error (the DDSketch idea).

A value v > 0 goes to bucket ceil(log_gamma(v)), gamma = (1 + a) / (1 - a); any quantile read
back from the buckets is within relative error `a` of the exact one. Two sketches merge by
adding bucket counts, so minutes merge into hours and days, and replicas into one figure,
without keeping a list of calls. Written here rather than taken from the `ddsketch` package
because the hot path (one `record`) must cost well under a microsecond and the stored form
must be plain JSON that SQLite and PostgreSQL both keep.
"""

from __future__ import annotations

import math
from typing import Any

RELATIVE_ACCURACY = 0.005  # half the 1% the API promises, to leave room for interpolation
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1.0 / math.log(_GAMMA)
_MIN_VALUE = 1e-6  # ms: anything faster is counted in the zero bucket


class LatencySketch:
    __slots__ = ("buckets", "zero", "count", "min", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.zero = 0
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def record(self, value_ms: float) -> None:
        self.count += 1
        if value_ms < self.min:
            self.min = value_ms
        if value_ms > self.max:
            self.max = value_ms
        if value_ms <= _MIN_VALUE:
            self.zero += 1
            return
        key = math.ceil(math.log(value_ms) * _INV_LOG_GAMMA)
        b = self.buckets
        b[key] = b.get(key, 0) + 1

    def merge(self, other: LatencySketch) -> None:
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        self.zero += other.zero
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def merge_json(self, data: dict[str, Any] | None) -> None:
        """`merge(LatencySketch.from_json(data))` in one pass over the stored buckets, without
        the sketch in between (a day's total merges ~80 stored sketches of up to hundreds of
        buckets each)."""
        if not data:
            return
        b = self.buckets
        for k, v in (data.get("b") or {}).items():
            key = int(k)
            b[key] = b.get(key, 0) + int(v)
        self.zero += int(data.get("z") or 0)
        self.count += int(data.get("n") or 0)
        if data.get("min") is not None:
            self.min = min(self.min, float(data["min"]))
        self.max = max(self.max, float(data.get("max") or 0.0))

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1), lower-rank definition: the value at rank floor(q*(n-1))."""
        if self.count == 0:
            return 0.0
        rank = math.floor(q * (self.count - 1))
        if rank < self.zero:
            return 0.0
        seen = self.zero
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen > rank:
                value = 2 * _GAMMA**key / (_GAMMA + 1)
                return min(max(value, self.min), self.max)
        return self.max

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """`quantile` of each of `qs` (ascending), the buckets sorted once."""
        if self.count == 0:
            return [0.0] * len(qs)
        ranks = [math.floor(q * (self.count - 1)) for q in qs]
        out: list[float] = []
        seen, i = self.zero, 0
        while i < len(ranks) and ranks[i] < seen:
            out.append(0.0)
            i += 1
        lo, hi = self.min, self.max
        for key in sorted(self.buckets):
            if i == len(ranks):
                break
            seen += self.buckets[key]
            while i < len(ranks) and seen > ranks[i]:
                value = 2 * _GAMMA**key / (_GAMMA + 1)
                out.append(lo if value < lo else hi if value > hi else value)
                i += 1
        out.extend([hi] * (len(ranks) - i))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "a": RELATIVE_ACCURACY,
            "b": {str(k): v for k, v in self.buckets.items()},
            "z": self.zero,
            "n": self.count,
            "min": None if self.count == 0 else self.min,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LatencySketch:
        sk = cls()
        if not data:
            return sk
        sk.buckets = {int(k): int(v) for k, v in (data.get("b") or {}).items()}
        sk.zero = int(data.get("z") or 0)
        sk.count = int(data.get("n") or 0)
        sk.min = math.inf if data.get("min") is None else float(data["min"])
        sk.max = float(data.get("max") or 0.0)
        return sk
