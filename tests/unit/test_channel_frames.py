"""The worker channel's frame reader (runtime/channel.py _Frames): multiprocessing.Connection's
frames, however the bytes arrive."""

from __future__ import annotations

import os
import socket
from multiprocessing.connection import Connection

import pytest

from mlx_platform.runtime.channel import _Frames


def pair() -> tuple[Connection, socket.socket, _Frames]:
    ours, theirs = socket.socketpair()
    return Connection(theirs.detach()), ours, _Frames(ours.fileno(), 1 << 20)


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
