"""An invocation's answer, encoded where the call ran (on the plugin's own thread): nothing
the size of a result is handled on the event loop, nor walked in Python when orjson can
write it."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder

from mlx_platform.core import lifecycle
from mlx_platform.core.context import Core
from mlx_platform.errors import PluginExecutionError

# The envelope around a result (plugin id, operation, duration): allowed on top of the cap.
_ENVELOPE_BYTES = 1024


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
