"""Run a module of ours in a throwaway Python process and read the one JSON answer it prints.

For everything that must import plugin code without the service importing it: a broken or
hostile module can crash, hang or pollute only that process. The answer is the line that
starts with the marker, so whatever the plugin prints on import does not confuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

MARK = "@@mlx-answer@@"


class ThrowawayFailed(Exception):
    """The process timed out or ended without answering; the message says which."""


def answer(payload: Any) -> None:
    """Print the answer (called in the throwaway process)."""
    sys.stdout.write("\n" + MARK + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def run_module(
    module: str, *args: str, timeout: float, extra_paths: list[str] | None = None
) -> Any:
    env = dict(os.environ)
    paths = [p for p in (extra_paths or []) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ThrowawayFailed(f"took longer than {timeout:g} s") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise ThrowawayFailed(f"the process ended with exit code {proc.returncode} before answering")
