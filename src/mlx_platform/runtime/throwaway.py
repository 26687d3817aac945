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

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import IO, Any

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
    # The service's settings (MLX_JWT_SECRET, MLX_SECRET_KEY, MLX_DATABASE_URL...) are not the
    # imported module's business: it could mint tokens or decrypt every secret with them.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLX_")}
    paths = [p for p in (extra_paths or []) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        reader = _AnswerReader()
        finished = _read_until(proc.stdout, reader, deadline)
        if finished:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                finished = False
        if not finished:
            raise ThrowawayFailed(f"took longer than {timeout:g} s")
    finally:
        _end_session(proc)
    if reader.answer is not None:
        return json.loads(reader.answer)
    if reader.oversize:
        raise ThrowawayFailed(f"its answer was larger than {MAX_ANSWER_BYTES // 1024} KiB")
    raise ThrowawayFailed(f"the process ended with exit code {proc.returncode} before answering")


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


def _read_until(stream: IO[bytes], reader: _AnswerReader, deadline: float) -> bool:
    """Feed the stream to `reader` until it ends (True) or the deadline passes (False)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not selector.select(remaining):
                continue
            data = os.read(stream.fileno(), _CHUNK)
            if not data:
                return True
            reader.feed(data)


def _end_session(proc: subprocess.Popen[bytes]) -> None:
    """End the process and anything it started (its session), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
