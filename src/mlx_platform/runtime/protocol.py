"""The framing between the service and a plugin worker.

One message is one JSON object in a frame of `multiprocessing.connection.Connection` (a 4-byte
length, then the bytes; `write_frame` and `Frames`) over a Unix socket pair: compact, no HTTP, no pickle (the
worker runs untrusted code, so nothing it sends is ever unpickled by the service).

Requests:  {"i": id, "k": kind, ...}    kinds: load, configure, start, stop, health, invoke, usage
           an invoke may carry "poll": seconds the worker may poll for the next request after
           answering this one, rather than sleep (worker.py, `WorkerHost._await_next`)
Responses: {"i": id, "ok": true, "v": value} | {"i": id, "ok": false, "e": {code, message, details}}
"""

from __future__ import annotations

import json
import os
import select
from typing import Any

try:
    # orjson encodes and decodes a small message in a fraction of a microsecond, against
    # about 3 us for the standard library: a good part of a process round trip.
    import orjson

    def encode(message: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(message)
        except TypeError:
            # what orjson refuses (an int beyond 64 bits, say) the standard library may take
            return _std_encode(message)

    _loads: Any = orjson.loads
    _DecodeError: Any = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - orjson is a server dependency; the fallback still works

    def encode(message: dict[str, Any]) -> bytes:
        return _std_encode(message)

    _loads = json.loads
    _DecodeError = ValueError


def _std_encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> dict[str, Any]:
    try:
        value = _loads(data)
    except _DecodeError as exc:
        raise ValueError(f"not a JSON worker message: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("a worker message must be a JSON object")
    return value


def write_frame(fd: int, data: bytes) -> None:
    """`data` as one frame of `multiprocessing.Connection` (what `Frames` reads), written to
    the blocking socket `fd`: small frames in one write, as `send_bytes` writes them, without
    its checks and its struct packing (a microsecond on the way of every request and answer).
    The caller keeps writers apart."""
    n = len(data)
    head = n.to_bytes(4, "big") if n <= 0x7FFFFFFF else b"\xff\xff\xff\xff" + n.to_bytes(8, "big")
    if n <= 16384:  # send_bytes' own threshold for joining the two
        data, head = head + data, b""
    for part in (head, data):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


class Frames:
    """The frames of `multiprocessing.Connection` (a 4-byte big-endian length, or -1 and an
    8-byte one, then the bytes) read from a socket: each read takes all that has arrived (up
    to `CHUNK`), and whole frames are cut from the buffer. The Connection's own `recv_bytes`
    makes two reads per frame (two system calls on the way of every request and answer), and
    a poll to learn whether another follows. One reader at a time: the service's channel
    (runtime/channel.py) lets only the caller that leads the reading touch it, the worker
    only the thread that holds its read lock."""

    # Under malloc's mmap threshold (128 KiB): `os.read` allocates this many bytes per call,
    # and a 256 KiB block was mapped and unmapped each time (~12 us a read here, ~1.5 us for
    # 64 KiB), on the way of every request and answer. A buffer kept for the reads would cost
    # every channel and every worker its size in memory.
    CHUNK = 64 * 1024

    def __init__(self, fd: int, max_frame: int) -> None:
        self.fd = fd
        self.max_frame = max_frame
        self.buf = bytearray()
        self._poller: select.poll | None = None  # made at the first `arrived`

    def arrived(self) -> bool:
        """Whether the socket has something to read now (or has ended, or was closed): asked
        over and over by a caller that polls rather than sleeps in `fill`."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    def fill(self) -> None:
        """Read what has arrived (blocks until something does): EOFError at the end."""
        data = os.read(self.fd, self.CHUNK)
        if not data:
            raise EOFError("the worker closed its socket")
        self.buf += data

    def take(self) -> bytes:
        """The next whole frame, read until it has arrived (blocks; EOFError at the end)."""
        while (frame := self.next()) is None:
            self.fill()
        return frame

    def pending(self) -> bool:
        """Whether bytes of a request or answer are in the buffer already (read ahead)."""
        return bool(self.buf)

    def next(self) -> bytes | None:
        """The next whole frame, or None until more is read. OSError for a frame over
        `max_frame` (what Connection.recv_bytes raises for one)."""
        buf = self.buf
        if len(buf) < 4:
            return None
        size = int.from_bytes(buf[:4], "big", signed=True)
        head = 4
        if size == -1:
            if len(buf) < 12:
                return None
            size, head = int.from_bytes(buf[4:12], "big"), 12
        if size < 0 or size > self.max_frame:
            raise OSError("bad message length")
        if len(buf) < head + size:
            return None
        frame = bytes(buf[head : head + size])
        del buf[: head + size]
        return frame
