"""Run a module of ours in a throwaway Python process and read the one JSON answer it prints.

For everything that must import plugin code without the service importing it: a broken or
hostile module can crash, hang or pollute only that process. The answer is the line that
starts with the marker, so whatever the plugin prints on import does not confuse it.

What the process prints is read as it comes and dropped, except the answer line (at most
`MAX_ANSWER_BYTES`): a plugin that prints 300 MB at import costs the service a 64 KiB buffer,
not 300 MB. Its stderr is not read at all. The process runs in a session of its own, and
whatever it started is ended with it.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mlx_platform.runtime.zygote import send as send_request

MARK = "@@mlx-answer@@"
_MARK = MARK.encode()
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class ThrowawayFailed(Exception):
    """The process timed out or ended without answering; the message says which."""


def answer(payload: Any) -> None:
    """Print the answer (called in the throwaway process)."""
    sys.stdout.write("\n" + MARK + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def run_module(
    module: str, *args: str, timeout: float, extra_paths: list[str] | None = None
) -> Any:
    """Run `python -m module args` in a throwaway process (forked by the zygote) with
    `extra_paths` in front of its path; its answer, or ThrowawayFailed."""
    deadline = time.monotonic() + timeout
    paths = [p for p in (extra_paths or []) if p]
    try:
        zygote = _zygote()
        pid, out = zygote.spawn(module, list(args), paths, _throwaway_env(), timeout)
    except ZygoteGone as exc:
        raise ThrowawayFailed(f"could not start its process: {exc}") from None
    reader = _AnswerReader()
    try:
        finished = _read_until(out, reader, deadline, lambda: zygote.has_exited(pid))
    finally:
        _end_session(pid)
        os.close(out)
    if not finished:
        raise ThrowawayFailed(f"took longer than {timeout:g} s")
    if reader.answer is not None:
        zygote.exit_code(pid, 0.0)  # its end, when already reported: nothing to keep
        return json.loads(reader.answer)
    if reader.oversize:
        raise ThrowawayFailed(f"its answer was larger than {MAX_ANSWER_BYTES // 1024} KiB")
    code = zygote.exit_code(pid, 2.0)
    ended = "the process ended" if code is None else f"the process ended with exit code {code}"
    raise ThrowawayFailed(f"{ended} before answering")


class _AnswerReader:
    """Keeps the last complete line that starts with the marker; drops everything else as
    it streams. Searches chunks for newline + marker (in C, by `bytes.find`), not line by
    line: 300 MB of short lines take a second, not twenty."""

    _START = b"\n" + _MARK

    def __init__(self) -> None:
        self.carry = b"\n"  # the stream's start counts as the start of a line
        self.line: bytearray | None = None  # the answer line being read, if any
        self.answer: bytes | None = None
        self.oversize = False

    def feed(self, data: bytes) -> None:
        buf = self.carry + data if self.line is None else data
        self.carry = b""
        pos = 0
        while pos < len(buf):
            if self.line is not None:
                end = buf.find(b"\n", pos)
                self.line += buf[pos : len(buf) if end < 0 else end]
                if len(self.line) > MAX_ANSWER_BYTES:
                    self.oversize, self.line = True, None  # drop it; look for another
                elif end >= 0:
                    self.answer, self.line = bytes(self.line), None
                if end < 0:
                    return
                pos = end  # the newline may start the next answer line
                continue
            found = buf.find(self._START, pos)
            if found < 0:
                # keep what could be the beginning of a marker cut by the chunk's end
                self.carry = buf[max(pos, len(buf) - len(self._START) + 1) :]
                return
            self.line = bytearray()
            pos = found + len(self._START)


def _read_until(
    fd: int, reader: _AnswerReader, deadline: float, exited: Callable[[], bool]
) -> bool:
    """Feed the pipe to `reader` until it is done (True) or the deadline passes (False).
    Done when the pipe ends (every process holding its write end closed it), or when the
    process has answered, exited, and left nothing unread: a process it started and left
    running (which holds the pipe too) does not hold the answer up."""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining if reader.answer is None else min(remaining, 0.02)
            if not selector.select(wait):
                if reader.answer is not None and exited():
                    return True
                continue
            data = os.read(fd, _CHUNK)
            if not data:
                return True
            reader.feed(data)


def _end_session(pid: int) -> None:
    """End the process and anything it started (its session; the zygote reaps it)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # not yet its own session leader, or already gone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    except PermissionError:
        pass


# ---------------------------------------------------------------- the zygote's client


class ZygoteGone(Exception):
    """The zygote could not be started, or ended."""


class Zygote:
    """The service's end of runtime/zygote.py: requests forks, learns pids and exit codes."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlx_platform.runtime.zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a Ctrl-C of the service's terminal is the service's
            )
        finally:
            theirs.close()
        self.sock = ours
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._next_id = 0
        self._pids: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self.alive = True
        threading.Thread(target=self._receive, name="mlx-zygote", daemon=True).start()

    def spawn(
        self,
        module: str,
        args: list[str],
        paths: list[str],
        env: dict[str, str],
        timeout: float,
    ) -> tuple[int, int]:
        """Fork a child running `module` with `env` as its environment; its pid and the read
        end of its stdout."""
        read_end, write_end = os.pipe()
        try:
            with self._send_lock:
                self._next_id += 1
                request_id = self._next_id
                request = {
                    "id": request_id,
                    "module": module,
                    "args": args,
                    "paths": paths,
                    "env": env,
                }
                try:
                    send_request(self.sock, request, [write_end])
                except OSError as exc:
                    self._gone()
                    raise ZygoteGone(str(exc)) from None
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with self._cond:
            if not self._cond.wait_for(
                lambda: request_id in self._pids or not self.alive, max(timeout, 5.0)
            ):
                os.close(read_end)
                raise ZygoteGone("the zygote did not answer")
            if request_id not in self._pids:
                os.close(read_end)
                raise ZygoteGone("the zygote ended")
            return self._pids.pop(request_id), read_end

    def has_exited(self, pid: int) -> bool:
        with self._cond:
            return pid in self._exits

    def exit_code(self, pid: int, timeout: float) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or not self.alive, timeout)
            return self._exits.pop(pid, None)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._gone()
                return
            message = json.loads(data)
            with self._cond:
                if "id" in message:
                    self._pids[message["id"]] = message["pid"]
                else:
                    self._exits[message["pid"]] = message["exit"]
                    if len(self._exits) > 1000:  # never claimed (an answer came first): drop
                        self._exits.pop(next(iter(self._exits)))
                self._cond.notify_all()

    def _gone(self) -> None:
        with self._cond:
            self.alive = False
            self._cond.notify_all()

    def close(self) -> None:
        self._gone()
        try:
            # shutdown, not only close: the receiving thread's recv holds the socket open,
            # and the zygote ends when it reads the end of its socket
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _throwaway_env() -> dict[str, str]:
    # The service's settings (MLX_JWT_SECRET, MLX_SECRET_KEY, MLX_DATABASE_URL...) are not the
    # imported module's business: it could mint tokens or decrypt every secret with them.
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MLX_")}


def _zygote() -> Zygote:
    """The live zygote of this process, started on first use, or again when it ended. It
    starts with the environment of the moment, scrubbed; each child gets the environment of
    its request's moment, scrubbed too."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        current = _ZYGOTE
        if current is not None and current.alive:
            return current
        if current is not None:
            current.close()
        try:
            _ZYGOTE = Zygote(_throwaway_env())
        except OSError as exc:
            _ZYGOTE = None
            raise ZygoteGone(str(exc)) from None
        return _ZYGOTE


@atexit.register
def _close_zygote() -> None:
    if _ZYGOTE is not None:
        _ZYGOTE.close()


def _forget_zygote() -> None:
    """In a child forked from a process with a live zygote: the zygote object came along,
    but not the thread that reads its answers (a spawn would wait for a pid that nobody
    reads). The child starts a zygote of its own when it needs one; the parent's is left
    to the parent (its socket is closed with the child)."""
    global _ZYGOTE, _ZYGOTE_LOCK
    _ZYGOTE = None
    _ZYGOTE_LOCK = threading.Lock()  # a lock held by another thread at the fork stays held


os.register_at_fork(after_in_child=_forget_zygote)
