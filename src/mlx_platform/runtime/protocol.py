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

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


def encode(message: dict[str, Any]) -> bytes:
    return _dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    value = _loads(data)
    if not isinstance(value, dict):
        raise ValueError("a worker message must be a JSON object")
    return value
