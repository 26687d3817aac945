"""Calls to a worker process from an event loop (runtime/channel.py `request_async`), under
the loop `mlx serve` runs (uvloop) and the standard one, mixed with the threads' calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvloop

from mlx_platform.errors import OperationTimeoutError, PluginExecutionError
from mlx_platform.runtime.process import ProcessInstance

FIXTURES = str(Path(__file__).resolve().parents[1] / "fixtures" / "plugin_pkgs")
PROBE = "mlx_test_plugins.WorkerProbePlugin"

pytestmark = pytest.mark.process

LOOPS: dict[str, Callable[[Any], Any]] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


@pytest.fixture
def worker() -> Iterator[ProcessInstance]:
    instance = ProcessInstance("plugin_channel_async_001", PROBE, extra_paths=[FIXTURES])
    instance.configure({}, 10)
    instance.start(10)
    yield instance
    instance.stop(graceful_timeout=1, force=True)


# how long a loop's call may poll the socket for its answer (request_async's spin_s): never,
# and longer than any answer here takes
SPINS = {"no polling": 0.0, "polling": 0.5}


@pytest.mark.parametrize("spin", sorted(SPINS))
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_threads_calls_work_after_and_beside_a_loops_calls(
    worker: ProcessInstance, loop: str, spin: str
) -> None:
    spin_s = SPINS[spin]

    async def calls() -> list[Any]:
        return await asyncio.gather(
            *(worker.invoke_async("echo", {"value": n}, 10, spin_s=spin_s) for n in range(50))
        )

    assert LOOPS[loop](calls()) == list(range(50))
    # a new loop at once: the last one ended while it still read the socket (it lingers)
    assert LOOPS[loop](calls()) == list(range(50))
    # the loop has ended: the threads read the socket again (uvloop had made it
    # non-blocking for its poll; a thread's read would have failed and ended the worker)
    # (no timeout: the thread reads at once, without waiting for the socket to be readable)
    assert worker.invoke("echo", {"value": "after"}, None) == "after"
    assert worker.health(5).healthy

    answers: list[Any] = []

    def thread_calls() -> None:
        for n in range(30):
            answers.append(worker.invoke("echo", {"value": -n}, None))

    async def mixed() -> list[Any]:
        thread = threading.Thread(target=thread_calls)
        thread.start()
        got = [
            await worker.invoke_async("echo", {"value": n}, 10, spin_s=spin_s) for n in range(100)
        ]
        await asyncio.to_thread(thread.join, 30)
        return got

    assert LOOPS[loop](mixed()) == list(range(100))
    assert answers == [-n for n in range(30)]
    assert worker.alive and worker.health(5).healthy


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_loops_call_times_out_and_the_late_answer_harms_nothing(
    worker: ProcessInstance, loop: str
) -> None:
    async def late() -> None:
        with pytest.raises(OperationTimeoutError):
            await worker.invoke_async("sleep", {"seconds": 0.5}, 0.1)
        await asyncio.sleep(0.6)  # its answer arrives now, for nobody
        assert await worker.invoke_async("echo", {"value": 7}, 10) == 7

    LOOPS[loop](late())
    assert worker.invoke("echo", {"value": 8}, 10) == 8


@pytest.mark.parametrize("spin", sorted(SPINS))
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_worker_that_dies_fails_the_loops_calls_at_once(
    worker: ProcessInstance, loop: str, spin: str
) -> None:
    spin_s = SPINS[spin]

    async def dying() -> list[BaseException | Any]:
        waiting = [worker.invoke_async("sleep", {"seconds": 30}, 60) for _ in range(3)]
        ending = worker.invoke_async("exit_now", {"code": 3}, 60, spin_s=spin_s)
        return await asyncio.wait_for(asyncio.gather(*waiting, ending, return_exceptions=True), 15)

    results = LOOPS[loop](dying())
    assert all(isinstance(r, PluginExecutionError) for r in results), results
    assert "exit" in str(results[0]).lower() or "ended" in str(results[0]).lower()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_lone_call_that_polls_is_answered_without_the_loop_running_anything_else(
    worker: ProcessInstance, loop: str
) -> None:
    """With `spin_s`, a call that is the only one waiting gets its answer by polling the
    socket: the loop runs nothing between the request and the answer (a callback scheduled
    before the call has not run when the call returns). Without it, the loop waits for the
    socket, running what is due meanwhile."""

    async def first_done(spin_s: float) -> list[str]:
        order: list[str] = []
        asyncio.get_running_loop().call_soon(order.append, "callback")
        assert await worker.invoke_async("echo", {"value": 1}, 10, spin_s=spin_s) == 1
        order.append("answer")
        await asyncio.sleep(0)
        return order

    async def both() -> tuple[list[str], list[str], list[str]]:
        # the first call of a loop registers the socket with it (a yield of its own)
        await worker.invoke_async("echo", {"value": 0}, 10)
        return await first_done(0.5), await first_done(0.0), await first_done(0.5)

    polled, waited, polled_again = LOOPS[loop](both())
    assert polled == ["answer", "callback"]
    assert waited == ["callback", "answer"]
    assert polled_again == ["answer", "callback"]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_call_that_polls_past_its_window_is_answered_by_the_loop(
    worker: ProcessInstance, loop: str
) -> None:
    """An answer slower than `spin_s` is awaited on the loop as usual; a worker whose answers
    typically take longer than the window is not polled for at all (the loop runs what is due
    before the answer), and polled for again once its answers are quick."""

    async def calls() -> list[Any]:
        got = [
            await worker.invoke_async("sleep", {"seconds": 0.02}, 10, spin_s=0.001)
            for _ in range(3)
        ]
        order: list[str] = []
        asyncio.get_running_loop().call_soon(order.append, "callback")
        got.append(await worker.invoke_async("echo", {"value": 5}, 10, spin_s=0.001))
        order.append("answer")
        got.append(order)
        for _ in range(40):  # quick answers bring the typical time back under the window
            await worker.invoke_async("echo", {"value": 6}, 10, spin_s=0.001)
        order2: list[str] = []
        asyncio.get_running_loop().call_soon(order2.append, "callback")
        got.append(await worker.invoke_async("echo", {"value": 7}, 10, spin_s=0.001))
        order2.append("answer")
        await asyncio.sleep(0)
        got.append(order2)
        return got

    got = LOOPS[loop](calls())
    assert got[4] == ["callback", "answer"]  # not polled for: the loop ran the callback
    assert got[6] == ["answer", "callback"]  # polled for again
    assert got[5] == 7 and got[3] == 5


def _cpu_s(worker: ProcessInstance) -> float:
    times = psutil.Process(worker.pid).cpu_times()
    return times.user + times.system


def test_a_worker_polls_for_the_next_request_only_after_a_lone_callers_quick_calls(
    worker: ProcessInstance,
) -> None:
    """A call that polls for its answer (`spin_s`) lets the worker poll as long for the next
    request after answering (worker.py `_await_next`), which costs the worker CPU time while
    it waits; a call that does not poll, or calls further apart than the window, leave the
    worker asleep between calls."""

    async def cpu_over(spin_s: float, calls: int, pause: float, after: float) -> float:
        await worker.invoke_async("echo", {"value": 0}, 10)  # the loop reads this socket
        await asyncio.sleep(0.3)  # longer than any window here: the last gap is long
        before = _cpu_s(worker)
        for n in range(calls):
            assert await worker.invoke_async("echo", {"value": n}, 10, spin_s=spin_s) == n
            await asyncio.sleep(pause)
        await asyncio.sleep(after)
        return _cpu_s(worker) - before

    async def cases() -> tuple[float, float, float]:
        return (
            # back to back, then quiet: the worker polls for up to 1 s after the last (its CPU
            # time then is well over the threshold also when it gets a sixth of a CPU)
            await cpu_over(1.0, 20, 0, 1.1),
            # the same calls without polling: the worker sleeps
            await cpu_over(0.0, 20, 0, 0.5),
            # 0.3 s apart, a window of 0.1 s: not polled for (else ~0.5 s of CPU)
            await cpu_over(0.1, 5, 0.3, 0.2),
        )

    polled, asleep, spread = uvloop.run(cases())
    assert polled >= 0.15, polled
    assert asleep < 0.1, asleep
    assert spread < 0.1, spread
    assert worker.invoke("echo", {"value": "after"}, 5) == "after"
