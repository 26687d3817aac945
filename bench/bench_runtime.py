"""Invocation costs: in-process overhead, process round trip beside a bare pipe, recording."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

from _common import Figure, per_call_us

from mlx_platform.core.metrics import MetricsRecorder
from mlx_platform.plugins import Plugin, operation
from mlx_platform.runtime.host import InProcessInstance
from mlx_platform.runtime.process import ProcessInstance
from mlx_platform.runtime.protocol import encode
from mlx_platform.storage import Database


class BenchPlugin(Plugin):
    @operation
    def echo(self, value: object) -> object:
        return value


_ECHO_SERVER = """
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
while True:
    try:
        data = conn.recv_bytes()
    except EOFError:
        break
    conn.send_bytes(data)
"""


class BarePipe:
    """The floor: the same message to a process that sends it straight back."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ECHO_SERVER, str(child.fileno())], pass_fds=(child.fileno(),)
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.message = encode({"i": 1, "k": "invoke", "op": "echo", "args": {"value": 1}})

    def roundtrip(self) -> None:
        self.conn.send_bytes(self.message)
        self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()
        self.proc.wait(timeout=10)


@contextmanager
def pinned_apart(server_pids: list[int]) -> Iterator[str]:
    """Pin the calling thread to one CPU and every thread of `server_pids` to another (the
    calling thread's CPUs are given back at the end), so that the worker and the bare pipe are measured with the same placement: left
    to the scheduler, a pair that shares a CPU makes a round trip of ~12 us here and a pair
    on two ~75 us (the other vCPU halts in between and must be woken), and which pair got
    which changed from run to run (the ratio swung from 0.4x to 5.5x). Two CPUs, as the
    service runs: its event loop on one, a worker on another. Yields what the figure's
    label says about it; nothing is pinned on a machine with one CPU."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else set()
    if len(allowed) < 2:
        yield "not pinned: one CPU"
        return
    import psutil

    cpus = sorted(allowed)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        for pid in server_pids:
            for thread in psutil.Process(pid).threads():
                os.sched_setaffinity(thread.id, {cpus[1]})
        yield f"caller on CPU {cpus[0]}, echo side on CPU {cpus[1]}"
    finally:
        os.sched_setaffinity(0, allowed)


def interleaved_us(a, b, *, blocks: int = 12, calls: int = 300) -> tuple[float, float]:
    """Medians of single calls of `a` and `b`, measured in alternating blocks, so that load
    from elsewhere on a shared machine falls on both alike."""
    for _ in range(300):
        a()
        b()
    samples_a: list[float] = []
    samples_b: list[float] = []
    for _ in range(blocks):
        for func, samples in ((a, samples_a), (b, samples_b)):
            for _ in range(calls):
                t0 = time.perf_counter()
                func()
                samples.append(time.perf_counter() - t0)
    return statistics.median(samples_a) * 1e6, statistics.median(samples_b) * 1e6


def run() -> list[Figure]:
    figures = []
    plugin = BenchPlugin()
    inst = InProcessInstance("plugin_bench_001", plugin)
    inst._mark_started()
    args = {"value": 1}
    direct = per_call_us(lambda: plugin.echo(**args))
    through = per_call_us(lambda: inst.invoke("echo", args, None))
    figures.append(
        Figure(
            "inprocess_invoke_overhead", through - direct, "us", 3.0, direct, "(direct method call)"
        )
    )

    bench_dir = str(Path(__file__).resolve().parent)
    proc_inst = ProcessInstance(
        "plugin_bench_002", "bench_runtime.BenchPlugin", extra_paths=[bench_dir]
    )
    try:
        proc_inst.configure({}, 10)
        proc_inst.start(10)
        bare = BarePipe()
        try:
            with pinned_apart([bare.proc.pid, proc_inst.pid]) as placement:
                pipe, rt = interleaved_us(
                    bare.roundtrip, lambda: proc_inst.invoke("echo", args, None)
                )
        finally:
            bare.close()
    finally:
        proc_inst.stop(graceful_timeout=1, force=False)
    figures.append(
        Figure(
            "process_invoke_roundtrip",
            rt,
            "us",
            150.0,
            pipe,
            f"(bare pipe round trip; {placement})",
        )
    )
    figures.append(
        Figure(
            "process_invoke_vs_bare_pipe", rt / pipe, "x", 3.0, 1.0, f"(bare pipe = 1; {placement})"
        )
    )

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{os.path.join(tmp, 'm.db')}")
        recorder = MetricsRecorder(db)
        counter: Counter[str] = Counter()

        def bare() -> None:
            counter["plugin_bench_001"] += 1

        base = per_call_us(bare, calls=100000)
        rec = per_call_us(lambda: recorder.record("plugin_bench_001", 1.234, True), calls=100000)
        db.dispose()
    figures.append(
        Figure("metrics_record_one_invocation", rec, "us", 1.0, base, "(bare Counter increment)")
    )
    return figures


if __name__ == "__main__":
    for f in run():
        print(f.line())
