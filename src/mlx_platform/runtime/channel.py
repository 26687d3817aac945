"""The service's end of the socket to one worker process, shared by the calls of many threads.

The callers take turns reading it (leader/followers): the caller that reads an answer meant
for another hands it over and keeps reading until its own arrives, so the common case, one
call at a time, crosses no thread boundary at all. When the worker ends (its instance's
watcher sees it, `end`), every waiting call fails at once.

A request that times out stays "overdue" until its late answer arrives: its thread in the
worker may be stuck, and the instance (process.py) decides what to do about it.

Calls made from an event loop (`request_async`, the API's invocations) wait on a future, not
a thread: when one of them finds nobody reading, the loop itself leads, reading the socket
when it is readable (`add_reader`) and handing answers to the threads' calls too; when no
call of the loop waits any more, it hands the reading back to a waiting thread. So many
concurrent invocations cost no thread each, and a thread's call (a health check, a start)
on the same worker is answered all the same.

A loop's call may also wait for its answer by polling the socket for a short while
(`request_async`'s `spin_s`) instead of going back to the loop: on a machine whose idle CPUs
sleep (a VM's vCPUs halt), waking the loop's thread for an answer that comes ~50 us later costs
about as much again as the answer (docs/decisions.md, "Waiting for a worker's answer").
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from mlx_platform.errors import ERROR_CLASSES, OperationTimeoutError, PluginExecutionError
from mlx_platform.runtime.protocol import Frames, decode, encode, write_frame


class WorkerDiedError(PluginExecutionError):
    """The worker process ended while a call was waiting for it."""


# How often a thread waiting for an answer checks that the loop reading for it still runs.
_FOLLOW_S = 0.25


def _ended(loop: asyncio.AbstractEventLoop) -> bool:
    return loop.is_closed() or not loop.is_running()


class _Waiter:
    """A call waiting for its answer: a thread's (an Event) or an event loop's (a future)."""

    __slots__ = ("event", "future", "loop", "reply")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.reply: dict[str, Any] | None = None
        self.loop = loop
        # a thread's: set when an answer arrived, or when this caller should lead
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def wake(self) -> None:
        """Its answer arrived, or the worker ended (called under the channel's mutex)."""
        if self.event is not None:
            self.event.set()
        elif self.loop is not None:
            if _on_loop(self.loop):
                _settle(self.future)
            else:
                self.loop.call_soon_threadsafe(_settle, self.future)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _settle(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _unanswered(message: dict[str, Any], timeout: float | None) -> OperationTimeoutError:
    return OperationTimeoutError(
        f"{message['k']} did not answer within {timeout:g} s", {"timeout": timeout}
    )


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class WorkerChannel:
    """Requests and answers over the connection to one worker.

    `LINGER_S`: how long a loop keeps reading after its last call when nobody waits (calls
    in bursts then cost no registration with the loop each).

    `broken(exc)` is called by the caller whose read failed (the connection broke, or the
    worker sent a frame over `max_frame` bytes); it ends the worker and calls `end`.
    `overdue(rid, message, outstanding)` is called when a request timed out unanswered, with
    the number of requests the worker may still be running."""

    LINGER_S = 0.5
    # the weight of the newest answer in `_answer_s`, the channel's typical answer time
    ANSWER_WEIGHT = 0.125

    def __init__(
        self,
        conn: Connection,
        plugin_id: str,
        *,
        max_frame: int,
        broken: Callable[[BaseException], None],
        overdue: Callable[[int, dict[str, Any], int], None],
    ) -> None:
        self.plugin_id = plugin_id
        self.max_frame = max_frame
        self.exit_reason: str | None = None  # set once the worker has ended
        self.kill_reason: str | None = None  # why the service is ending it, when it is
        self._conn = conn
        self._fd = conn.fileno()
        self._frames = Frames(self._fd, max_frame)
        self._broken = broken
        self._overdue_call = overdue
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._mutex = threading.Lock()  # guards _waiters, _leading and each waiter's reply
        self._leading = False
        self._reading_loop: asyncio.AbstractEventLoop | None = None  # the loop that leads
        self._loop_called_at = float("-inf")  # the last call of a loop (time.monotonic())
        self._linger_check = False  # a check of whether the loop may stop reading is due
        self._write_lock = threading.Lock()
        self._answer_s = 0.0  # a moving average of the time a loop's call waits for its answer
        # requests that timed out but were never answered: they may still hold worker threads
        self._overdue: dict[int, str] = {}

    # ------------------------------------------------------------------ the worker's end

    def set_kill_reason(self, reason: str) -> bool:
        """Record why the service ends the worker; False if it has ended or is being ended."""
        with self._mutex:
            if self.exit_reason is not None or self.kill_reason is not None:
                return False
            self.kill_reason = reason
            return True

    def end(self, reason: str) -> str | None:
        """The worker has ended: every waiting call fails. Returns why it ended (the kill
        reason, when the service ended it), or None when that was known already."""
        with self._mutex:
            if self.exit_reason is not None:
                return None
            self.exit_reason = self.kill_reason or reason
            for w in self._waiters.values():
                w.wake()  # no reply: the caller raises WorkerDiedError
            return self.exit_reason

    def close(self) -> None:
        loop = self._reading_loop
        if loop is not None and not _on_loop(loop) and not loop.is_closed():
            # the loop watches this descriptor: it stops watching, then closes it (closed
            # first, its number could be reused by another socket before the loop lets go)
            try:
                loop.call_soon_threadsafe(self._close_on_loop, loop)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._close_on_loop(loop)

    def _close_on_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is not None and self._reading_loop is loop and not loop.is_closed():
            self._stop_reading(loop)
        try:
            self._conn.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ timed-out requests

    def is_overdue(self, rid: int) -> bool:
        with self._mutex:
            return rid in self._overdue

    def still_running(self, rid: int, busy: Iterable[int] | None) -> bool:
        """Whether the overdue request `rid` is among those the worker says it runs (`busy`,
        its answer to a "busy" request); forgotten when it is not."""
        with self._mutex:
            still = rid in (busy or [])
            if not still:
                self._overdue.pop(rid, None)
        return still

    # ------------------------------------------------------------------ requests

    def request(self, message: dict[str, Any], timeout: float | None) -> Any:
        """Send `message` and wait up to `timeout` s for its answer's value. Raises the
        worker's error, OperationTimeoutError, or WorkerDiedError."""
        waiter = _Waiter()
        rid = self._register(message, waiter)
        data = encode(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._write_lock:
                write_frame(self._fd, data)
            answered = self._await(rid, waiter, deadline)
        except OSError:
            answered = True  # the worker is gone: reply stays None
        finally:
            with self._mutex:
                self._waiters.pop(rid, None)
        if not answered:
            self._timed_out(rid, message)
            raise _unanswered(message, timeout)
        return self._value(waiter.reply, message)

    def _register(self, message: dict[str, Any], waiter: _Waiter) -> int:
        """Number `message` and wait for its answer with `waiter`; WorkerDiedError when the
        worker has ended."""
        rid = next(self._ids)
        message["i"] = rid
        with self._mutex:
            if self.exit_reason is not None:
                raise WorkerDiedError(f"plugin {self.plugin_id} is not running: {self.exit_reason}")
            self._waiters[rid] = waiter
        return rid

    async def request_async(
        self, message: dict[str, Any], timeout: float | None, spin_s: float = 0.0
    ) -> Any:
        """`request` for a caller on an event loop: waits on a future, and the loop reads
        the socket itself while nobody else does (module docstring). What happens when the
        call times out (the instance may restart the worker) runs on a thread.

        `spin_s` > 0: the caller knows the loop has nothing else to do (the service serves
        this request only); then, when the loop leads the reading, nobody else waits on this
        worker and its answers typically come within `spin_s`, the socket is polled for up
        to `spin_s` before the loop waits for it (`_spin`), and the worker may poll as long
        for the next request after answering (the request's "poll", worker.py)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        rid = self._register(message, waiter)
        with self._mutex:
            self._loop_called_at = time.monotonic()
            gone = self._reading_loop
            if gone is not None and gone is not loop and _ended(gone):
                self._reading_loop = None  # a loop that led has ended without handing on
                self._leading = False
            lead = not self._leading
            if lead:
                self._leading = True
            # what `_spin` checks again once the request is out: the loop leads, nobody else waits
            alone = len(self._waiters) == 1 and (lead or self._reading_loop is loop)
        spin = alone and spin_s > 0 and self._answer_s < spin_s
        if spin:
            message["poll"] = spin_s
        data = encode(message)
        answered = True
        try:
            if lead:
                self._start_reading(loop)
            with self._write_lock:
                write_frame(self._fd, data)
            sent = time.perf_counter()
            future = waiter.future
            assert future is not None
            if spin:
                self._spin(loop, future, sent + spin_s)
            # a timer that ends the wait (lighter than wait_for or asyncio.timeout: no task,
            # no cancellation), and is dropped when the answer comes first; none when the
            # answer came while the socket was polled
            timer = None
            if timeout is not None and not future.done():
                timer = loop.call_later(timeout, _expire, future)
            try:
                await future
            finally:
                if timer is not None:
                    timer.cancel()
            self._answer_s += (time.perf_counter() - sent - self._answer_s) * self.ANSWER_WEIGHT
        except TimeoutError:
            answered = waiter.reply is not None
        except OSError:
            pass  # the worker is gone: reply stays None
        finally:
            with self._mutex:
                self._waiters.pop(rid, None)
        if not answered:
            loop.run_in_executor(None, self._timed_out, rid, message)  # may restart the worker
            raise _unanswered(message, timeout)
        return self._value(waiter.reply, message)

    def _spin(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], until: float
    ) -> None:
        """Poll the socket until `future` has its answer or `until` (time.perf_counter())
        passes, delivering what arrives, while the loop leads and this is the only call
        waiting on the worker. The loop runs nothing else meanwhile: only a caller that knows
        it has nothing else to run asks for this (`request_async`)."""
        if self._reading_loop is not loop or len(self._waiters) != 1:
            return
        while not future.done() and self._reading_loop is loop:
            if self._frames.arrived():
                # delivers every whole answer (EOF ends the reading); whether the loop keeps
                # leading is decided once the caller's answer is on its way
                self._on_readable(loop, settle_later=True)
            elif time.perf_counter() >= until:
                return
            else:
                os.sched_yield()  # a thread that can run here (the worker, say) goes first

    def _value(self, reply: dict[str, Any] | None, message: dict[str, Any]) -> Any:
        """The answer's value, or the worker's error raised."""
        if reply is None:
            raise WorkerDiedError(
                f"plugin {self.plugin_id}: {self.exit_reason or 'the worker ended'} during {message['k']}",
                {"reason": self.exit_reason},
            )
        if reply.get("ok"):
            return reply.get("v")
        err = reply.get("e") or {}
        cls = ERROR_CLASSES.get(str(err.get("code")), PluginExecutionError)
        raise cls(str(err.get("message", "the plugin failed")), err.get("details") or {})

    def _timed_out(self, rid: int, message: dict[str, Any]) -> None:
        with self._mutex:
            self._overdue[rid] = str(message.get("k"))
            outstanding = len(self._waiters) + len(self._overdue)
        self._overdue_call(rid, message, outstanding)

    def _await(self, rid: int, waiter: _Waiter, deadline: float | None) -> bool:
        """Wait for our answer, reading the socket ourselves whenever nobody else does."""
        while True:
            with self._mutex:
                if waiter.reply is not None or self.exit_reason is not None:
                    return True
                lead = not self._leading
                if lead:
                    self._leading = True
                else:
                    assert waiter.event is not None
                    waiter.event.clear()
            if lead:
                try:
                    return self._lead(rid, waiter, deadline)
                finally:
                    with self._mutex:
                        self._leading = False
                        self._hand_on(waiter)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            assert waiter.event is not None
            # in slices: a loop that leads may end (its thread stops running it) without
            # handing the reading on; then this thread takes it
            if not waiter.event.wait(_FOLLOW_S if remaining is None else min(remaining, _FOLLOW_S)):
                with self._mutex:
                    if waiter.reply is not None:
                        return True
                    gone = self._reading_loop
                    if gone is not None and _ended(gone):
                        self._reading_loop = None
                        self._leading = False
                    if remaining is not None and remaining <= _FOLLOW_S:
                        return False

    def _hand_on(self, leaving: _Waiter | None) -> None:
        """Give the reading to another waiting call (under the mutex, `_leading` False): a
        thread is woken to lead; a loop's call makes its loop lead."""
        for other in self._waiters.values():
            if other is leaving or other.reply is not None:
                continue
            if other.event is not None:
                other.event.set()
            elif other.loop is not None and not other.loop.is_closed():
                other.loop.call_soon_threadsafe(self._loop_lead, other.loop)
            else:
                continue
            return

    def _loop_lead(self, loop: asyncio.AbstractEventLoop) -> None:
        """On `loop`: lead, if nobody does and one of its calls still waits."""
        with self._mutex:
            if self._leading or self.exit_reason is not None:
                return
            if not any(w.loop is loop and w.reply is None for w in self._waiters.values()):
                self._hand_on(None)
                return
            self._leading = True
        self._start_reading(loop)

    def _start_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reading_loop = loop
        fd = self._conn.fileno()
        with self._write_lock:  # no thread writes a frame while the flag may be off
            loop.add_reader(fd, self._on_readable, loop)
            # uvloop's (libuv's) poll handle makes the descriptor non-blocking; this channel
            # reads and writes whole frames with blocking calls, and asks the loop only
            # whether there is something to read
            os.set_blocking(fd, True)
        # answers the last leader read ahead are in the buffer, not in the socket: the
        # descriptor would never wake the loop for them
        loop.call_soon(self._on_readable, loop, False)

    def _stop_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.remove_reader(self._conn.fileno())
        except (OSError, ValueError):  # closed already
            pass
        self._reading_loop = None

    def _on_readable(
        self, loop: asyncio.AbstractEventLoop, read: bool = True, settle_later: bool = False
    ) -> None:
        """The loop leads and the socket is readable: one read takes every answer that has
        arrived (under load, many at once), each whole one is delivered (with `read` False,
        only those already in the buffer); then keep leading while a call of the loop waits,
        else give the reading back to the threads (a partial frame stays in the buffer for
        them)."""
        if self._reading_loop is not loop:
            return  # it let go meanwhile
        try:
            if read:
                self._frames.fill()
            while (frame := self._frames.next()) is not None:
                self._deliver(frame)
        except (EOFError, OSError) as exc:
            with self._mutex:
                self._stop_reading(loop)
                self._leading = False
            loop.run_in_executor(None, self._broken, exc)  # may wait for the worker to end
            return
        if settle_later:
            loop.call_soon(self._let_go_unless_needed, loop)
        else:
            self._let_go_unless_needed(loop)

    def _let_go_unless_needed(self, loop: asyncio.AbstractEventLoop) -> None:
        """After answers were delivered: keep leading while a call of the loop waits, or
        while none waits at all for `LINGER_S` after the loop's last call (the next call
        then needs no new registration with the loop); give the reading to a waiting thread
        at once, or to nobody after that time."""
        with self._mutex:
            if self._reading_loop is not loop:
                return
            waiting = [w for w in self._waiters.values() if w.reply is None]
            if any(w.loop is loop for w in waiting):
                return
            if not waiting and time.monotonic() - self._loop_called_at < self.LINGER_S:
                if not self._linger_check:
                    self._linger_check = True
                    loop.call_later(self.LINGER_S, self._linger_over, loop)
                return
            self._stop_reading(loop)
            self._leading = False
            self._hand_on(None)

    def _linger_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self._linger_check = False
        self._let_go_unless_needed(loop)

    def _lead(self, rid: int, waiter: _Waiter, deadline: float | None) -> bool:
        """Read answers until ours arrives (True) or time runs out (False)."""
        while waiter.reply is None and self.exit_reason is None:
            try:
                frame = self._frames.next()
                if frame is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and (remaining <= 0 or not self._conn.poll(remaining)):
                        return False
                    self._frames.fill()
                    continue
            except (EOFError, OSError) as exc:
                self._broken(exc)
                return True
            if self._deliver(frame) == rid:
                return True
        return True

    def _deliver(self, data: bytes) -> int | None:
        try:
            reply = decode(data)
        except ValueError:
            return None
        rid = reply.get("i")
        if not isinstance(rid, int):
            return None
        with self._mutex:
            waiter = self._waiters.get(rid)
            if waiter is not None:
                waiter.reply = reply
                waiter.wake()
            else:
                self._overdue.pop(rid, None)  # a late answer: that call has finished
        return rid
