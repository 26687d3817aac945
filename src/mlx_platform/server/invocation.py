"""Invocations through the API: where a call runs, and its answer encoded.

A plugin in a worker process of its own (the default) is called from the event loop itself
(`invoke`): a call slot taken from the plugin's `MLX_CALLS_PER_PLUGIN` (an asyncio
semaphore: the only limit on its calls), the request sent over the worker's channel and the
answer awaited on a future (runtime/channel.py), no thread crossed. Its row and instance
come from memory (lifecycle.ready_instance) while the database has not changed; else they
are read (and the instance started, if it must be) on the plugin's own threads first. A
plugin in the service's own process runs, as it always has, on its own threads
(`invoke_encoded`, whose count is its limit), where its answer is encoded too."""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder

from mlx_platform.core import lifecycle, refusals
from mlx_platform.core.context import Core
from mlx_platform.errors import OperationTimeoutError, PluginExecutionError
from mlx_platform.runtime.host import PluginHost
from mlx_platform.runtime.instance import RunningInstance

# The envelope around a result (plugin id, operation, duration): allowed on top of the cap.
_ENVELOPE_BYTES = 1024
# How long past its deadline a running invocation's own timeout answer is awaited.
_LATE_ANSWER_S = 2.0
# the call slots of the calls made from the event loop, by host and plugin
_SLOTS: weakref.WeakKeyDictionary[PluginHost, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


async def invoke(
    core: Core,
    plugin_id: str,
    operation: str,
    arguments: dict[str, Any],
    timeout: float,
    instance: RunningInstance | None = None,
    spin_s: float = 0.0,
) -> bytes:
    """The encoded answer of one invocation; the timeout counts from here, the wait for a
    call slot included. `instance`: lifecycle.ready_instance's answer, when the caller has
    it already. `spin_s`: how long the event loop may poll for a worker's answer rather
    than sleep, when the caller knows the loop has nothing else to do (runtime/channel.py)."""
    deadline = time.monotonic() + timeout
    if instance is None:
        instance = lifecycle.ready_instance(core, plugin_id)
    if instance is None:
        # the row read, the instance started if it must be: on the plugin's own threads
        target = core.host.executor_for(plugin_id).submit(lifecycle.call_target, core, plugin_id)
        try:
            instance = await asyncio.wait_for(
                asyncio.wrap_future(target), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            raise refusals.call_did_not_start(operation, timeout) from None
    if instance.isolation != "process":
        return await _on_plugin_threads(core, plugin_id, operation, arguments, timeout, deadline)
    if deadline - time.monotonic() <= 0:
        raise refusals.call_did_not_start(operation, timeout)
    slots = _SLOTS.get(core.host)
    if slots is None:  # (setdefault would make a weak reference on every call)
        slots = _SLOTS.setdefault(core.host, {})
    slot = slots.get(plugin_id)
    if slot is None:
        slot = slots[plugin_id] = asyncio.Semaphore(core.host.calls_per_plugin)
    if slot.locked():  # every slot taken: wait for one until the deadline
        try:
            await asyncio.wait_for(slot.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise refusals.call_slots_busy(operation, timeout) from None
    else:
        await slot.acquire()  # free: taken at once
    t0 = time.perf_counter()
    ok = False
    try:
        result = await instance.invoke_async(
            operation, arguments, max(0.001, deadline - time.monotonic()), spin_s=spin_s
        )
        ok = True
    except OperationTimeoutError:
        raise refusals.call_timed_out(operation, timeout) from None
    finally:
        slot.release()
        elapsed = (time.perf_counter() - t0) * 1000
        # counted once the answer is on its way (the loop runs it before the next request)
        asyncio.get_running_loop().call_soon(core.metrics.record, plugin_id, elapsed, ok)
    return _encoded(core, operation, lifecycle.answer_of(plugin_id, operation, result, elapsed))


async def _on_plugin_threads(
    core: Core,
    plugin_id: str,
    operation: str,
    arguments: dict[str, Any],
    timeout: float,
    deadline: float,
) -> bytes:
    """The call on the plugin's own threads (a stuck plugin holds only those)."""
    future = core.host.executor_for(plugin_id).submit(
        invoke_encoded, core, plugin_id, operation, arguments, timeout, deadline
    )
    waiting = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(
            asyncio.shield(waiting), max(0.0, deadline - time.monotonic())
        )
    except TimeoutError:
        if future.cancel():  # still queued: it never runs
            raise refusals.call_slots_busy(operation, timeout) from None
        try:  # running: its own timeout ends at the same deadline, so its answer is due now
            return await asyncio.wait_for(waiting, _LATE_ANSWER_S)
        except TimeoutError:
            raise refusals.call_timed_out(operation, timeout) from None


def invoke_encoded(
    core: Core,
    plugin_id: str,
    operation: str,
    arguments: dict[str, Any],
    timeout: float,
    deadline: float,
) -> bytes:
    invocation = lifecycle.invoke_plugin(
        core, plugin_id, operation, arguments, timeout, deadline=deadline
    )
    return _encoded(core, operation, invocation)


def _encoded(core: Core, operation: str, invocation: lifecycle.Invocation) -> bytes:
    content = encode_json({"success": True, "data": invocation})  # a dataclass: orjson writes it
    cap = core.settings.max_invoke_result_bytes
    if len(content) > cap + _ENVELOPE_BYTES:
        # a worker refuses an oversize result itself; this measures in-process plugins
        raise PluginExecutionError(
            f"the result of operation '{operation}' is {len(content)} bytes, over the cap of "
            f"{cap} bytes (MLX_MAX_INVOKE_RESULT_BYTES): return less, or a reference to the data",
            {"operation": operation, "result_bytes": len(content), "max_result_bytes": cap},
        )
    return content


def encode_json(value: object) -> bytes:
    """JSON as FastAPI would write it (types orjson does not know go through FastAPI's own
    encoder), with orjson's speed; NaN and infinities become null."""
    try:
        return orjson.dumps(value, default=jsonable_encoder, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits, say: the standard library takes it
        pass
    try:
        return json.dumps(jsonable_encoder(value), separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # an in-process plugin returned an object
        raise PluginExecutionError(
            f"the plugin returned a value that is not JSON: {type(exc).__name__}"
        ) from None
