"""The framing between the service and a plugin worker.

One message is one JSON object sent with `multiprocessing.connection.Connection.send_bytes`
(a 4-byte length, then the bytes) over a Unix socket pair: compact, no HTTP, no pickle (the
worker runs untrusted code, so nothing it sends is ever unpickled by the service).

Requests:  {"i": id, "k": kind, ...}    kinds: load, configure, start, stop, health, invoke, usage
Responses: {"i": id, "ok": true, "v": value} | {"i": id, "ok": false, "e": {code, message, details}}
"""

from __future__ import annotations

import json
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
