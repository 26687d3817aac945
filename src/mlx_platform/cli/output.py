"""Where `mlx` output goes: JSON for scripts, one line per error, the exit code of each error.
What people see of an answer (its tables) is render.py's.

Tables and messages go to stdout, progress and errors to stderr, so that `--json` output can
be piped while a person still sees what went wrong.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from mlx_platform.errors import (
    ERROR_TABLE,
    MLXConnectionError,
    MLXError,
    MLXTimeoutError,
)
from mlx_platform.errors import ExitCode as ExitCode  # `mlx`'s exit codes, re-exported
from mlx_platform.sdk import InvalidResponseError, MLXConfigurationError

# A console writes to whatever sys.stderr is when it prints.
err_console = Console(stderr=True, highlight=False)


# ---------------------------------------------------------------- errors and exit codes


# The exit codes and which error code gives which are ERROR_TABLE's (mlx_platform.errors).
_EXIT_BY_CODE: dict[str, ExitCode] = {spec.code: spec.exit_code for spec in ERROR_TABLE}


class InputError(Exception):
    """A bad argument or file, found before anything is sent: exit code 2."""


def exit_code_for(exc: BaseException) -> ExitCode:
    if isinstance(exc, InputError):
        return ExitCode.INVALID_INPUT
    if isinstance(exc, MLXConnectionError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, MLXConfigurationError):
        return ExitCode.INVALID_INPUT
    if isinstance(exc, MLXError):
        return _EXIT_BY_CODE.get(exc.code, ExitCode.ERROR)
    return ExitCode.ERROR


def error_line(exc: BaseException) -> str:
    """The error in one line: code, message, request id (or what to check, when unreachable)."""
    if isinstance(exc, MLXTimeoutError):
        text = f"{exc.message} (the service is slow or stuck; see --help for timeouts)"
    elif isinstance(exc, MLXConnectionError):
        text = f"{exc.message} (is the service running? MLX_API_URL or --url says where it is)"
    elif isinstance(exc, InvalidResponseError):
        text = f"{exc} (is MLX_API_URL the mlx-platform service?)"
    elif isinstance(exc, MLXError) and exc.code == "OPERATION_NOT_FOUND":
        text = f"{exc.code}: {exc.message}{_available_operations(exc.details)}"
        if exc.request_id:
            text += f" (request_id={exc.request_id})"
    else:
        text = str(exc)
    return "error: " + " ".join(text.split())


def _available_operations(details: dict[str, Any]) -> str:
    """`; available operations: add, echo`: what the plugin does offer, from the details."""
    operations = details.get("available_operations")
    if not isinstance(operations, list):
        return ""
    return "; available operations: " + (", ".join(str(o) for o in operations) or "none")


def error_json(exc: BaseException) -> dict[str, Any]:
    """The error as the API's envelope, for `--json`: an answer of the API exactly as it came
    (its HTTP status is the exit code's business, not a key the API does not send); an error
    found here (unreachable service, bad input) in the same shape, without a request id."""
    # Checked before MLXError, their base: nothing was answered (no status, no request id).
    if isinstance(exc, MLXConnectionError):
        code = exc.code  # CONNECTION_ERROR or TIMEOUT
    elif isinstance(exc, MLXConfigurationError):
        code = "INVALID_INPUT"
    elif isinstance(exc, MLXError):
        return {"success": False, "error": exc.to_dict()}
    else:
        code = "INVALID_INPUT"
    return {
        "success": False,
        "error": {"code": code, "message": str(exc), "details": {}, "request_id": None},
    }


def print_error(exc: BaseException, *, as_json: bool) -> ExitCode:
    err_console.print(Text(error_line(exc), style="red"), soft_wrap=True)
    if as_json:
        print_json(error_json(exc))
    return exit_code_for(exc)


# ---------------------------------------------------------------- JSON


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(value: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """The answer as JSON for scripts (`--json`), else as `render` shows it to people."""
    if as_json:
        print_json(value)
    else:
        render(value)
