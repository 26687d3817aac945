"""Shared by the benchmarks: timing helpers, the figure line format, notes on stderr and the
failure of a measurement."""

from __future__ import annotations

import math
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class Failed(Exception):
    """A measurement that could not be taken honestly (said why)."""


def logger(bench: str) -> Callable[[str], None]:
    """A benchmark's notes: each a line on stderr that opens with its name."""

    def log(message: str) -> None:
        print(f"{bench}: {message}", file=sys.stderr, flush=True)

    return log


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: float
    baseline: float | None
    baseline_name: str
    lower_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    def line(self) -> str:
        op = "<=" if self.lower_is_better else ">="
        base = (
            "n/a"
            if self.baseline is None
            else f"{self.baseline:.3f} {self.unit} {self.baseline_name}"
        )
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = "MET" if self.met else "MISSED"
        return (
            f"{self.name}: {self.value:.3f} {self.unit} "
            f"(target {op} {self.target:g} {self.unit}; baseline {base}; ratio {ratio}) {verdict}"
        )


def per_call_us(func: Callable[[], object], *, calls: int = 20000, batches: int = 15) -> float:
    """Median over batches of the mean time of one call, in microseconds."""
    for _ in range(min(calls, 2000)):
        func()
    results = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            func()
        results.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(results)


def each_call_us(func: Callable[[], object], *, calls: int = 3000, warmup: int = 300) -> float:
    """Median of single-call times, in microseconds (for calls that cross processes)."""
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        func()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a service's log file, for a failure message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
