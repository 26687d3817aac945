"""The worker channel's frame reader (runtime/protocol.py Frames): multiprocessing.Connection's
frames, however the bytes arrive."""

from __future__ import annotations

import os
import socket
from multiprocessing.connection import Connection

import pytest

from mlx_platform.runtime.protocol import Frames


def pair() -> tuple[Connection, socket.socket, Frames]:
    ours, theirs = socket.socketpair()
    return Connection(theirs.detach()), ours, Frames(ours.fileno(), 1 << 20)


def test_frames_written_by_a_connection_are_read_whole_and_in_order() -> None:
    writer, sock, frames = pair()
    try:
        sent = [b"", b"a", b"x" * 70_000, b"y" * 5]
        for data in sent:
            writer.send_bytes(data)
        got: list[bytes] = []
        while len(got) < len(sent):
            frame = frames.next()
            if frame is None:
                frames.fill()
            else:
                got.append(frame)
        assert got == sent and frames.next() is None
    finally:
        writer.close()
        sock.close()


def test_a_frame_arriving_byte_by_byte_is_cut_once_whole() -> None:
    writer, sock, frames = pair()
    try:
        raw = (5).to_bytes(4, "big") + b"hello" + (-1).to_bytes(4, "big", signed=True)
        raw += (3).to_bytes(8, "big") + b"big"
        for byte in raw:
            os.write(writer.fileno(), bytes([byte]))
            frames.fill()
        assert frames.next() == b"hello"
        assert frames.next() == b"big"
        assert frames.next() is None
    finally:
        writer.close()
        sock.close()


def test_an_oversized_frame_and_the_end_are_errors() -> None:
    writer, sock, frames = pair()
    try:
        os.write(writer.fileno(), (2 << 20).to_bytes(4, "big"))
        frames.fill()
        with pytest.raises(OSError):
            frames.next()
        writer.close()
        with pytest.raises(EOFError):
            frames.fill()
    finally:
        sock.close()


def test_answers_a_thread_read_ahead_reach_the_loops_call_that_leads_next() -> None:
    """A thread leading the reading takes its own answer and a loop's call's from one read;
    the loop, leading next, must find that answer in the buffer (the socket holds nothing
    more to wake it)."""
    import asyncio
    import struct
    import threading
    import time

    from mlx_platform.runtime.channel import WorkerChannel
    from mlx_platform.runtime.protocol import decode, encode

    ours, theirs = socket.socketpair()
    channel = WorkerChannel(
        Connection(ours.detach()),
        "plugin_frames_001",
        max_frame=1 << 20,
        broken=lambda _exc: None,
        overdue=lambda *_args: None,
    )
    worker = Connection(theirs.detach())

    def frame(message: dict[str, object]) -> bytes:
        data = encode(message)
        return struct.pack("!i", len(data)) + data

    async def main() -> None:
        got: dict[str, object] = {}
        thread = threading.Thread(target=lambda: got.update(t=channel.request({"k": "t"}, 5)))
        thread.start()
        first = decode(worker.recv_bytes())  # the thread's request: it sent, it leads
        deadline = time.monotonic() + 5
        while not channel._leading and time.monotonic() < deadline:  # noqa: SLF001
            await asyncio.sleep(0.001)
        call = asyncio.ensure_future(channel.request_async({"k": "a"}, 5))
        second = decode(await asyncio.to_thread(worker.recv_bytes))
        # both answers in one write, the thread's first
        os.write(
            worker.fileno(),
            b"".join(frame({"i": m["i"], "ok": True, "v": m["k"]}) for m in (first, second)),
        )
        assert await asyncio.wait_for(call, 3) == "a"
        await asyncio.to_thread(thread.join, 3)
        assert got == {"t": "t"}

    try:
        asyncio.run(main())
    finally:
        channel.close()
        worker.close()
