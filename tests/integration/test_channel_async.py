"""Calls to a worker process from an event loop (runtime/channel.py `request_async`), under
the loop `mlx serve` runs (uvloop) and the standard one, mixed with the threads' calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_threads_calls_work_after_and_beside_a_loops_calls(
    worker: ProcessInstance, loop: str
) -> None:
    async def calls() -> list[Any]:
        return await asyncio.gather(
            *(worker.invoke_async("echo", {"value": n}, 10) for n in range(50))
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
        got = [await worker.invoke_async("echo", {"value": n}, 10) for n in range(100)]
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


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_worker_that_dies_fails_the_loops_calls_at_once(
    worker: ProcessInstance, loop: str
) -> None:
    async def dying() -> list[BaseException | Any]:
        waiting = [worker.invoke_async("sleep", {"seconds": 30}, 60) for _ in range(3)]
        ending = worker.invoke_async("exit_now", {"code": 3}, 60)
        return await asyncio.wait_for(asyncio.gather(*waiting, ending, return_exceptions=True), 15)

    results = LOOPS[loop](dying())
    assert all(isinstance(r, PluginExecutionError) for r in results), results
    assert "exit" in str(results[0]).lower() or "ended" in str(results[0]).lower()
