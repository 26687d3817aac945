"""Check that a class path loads, in a throwaway process.

Importing a broken or hostile module there cannot crash or pollute the service: the service
only reads one JSON line from this process's stdout. Run as
``python -m mlx_platform.runtime.probe CLASS_PATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProbeResult:
    loadable: bool
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


_MARK = "@@mlx-probe@@"


def probe_class(
    class_path: str, *, timeout: float, extra_paths: list[str] | None = None
) -> ProbeResult:
    env = dict(os.environ)
    paths = [p for p in (extra_paths or []) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mlx_platform.runtime.probe", class_path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"importing the class took longer than {timeout:g} s")
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            return ProbeResult(bool(data["loadable"]), data.get("error"), data.get("info") or {})
    reason = f"the import process ended with exit code {proc.returncode} before answering"
    return ProbeResult(False, reason)


def _main(class_path: str) -> int:
    from mlx_platform.runtime.loading import ClassLoadError, describe_class, import_plugin_class

    try:
        cls = import_plugin_class(class_path)
        payload: dict[str, Any] = {"loadable": True, "info": describe_class(cls)}
    except ClassLoadError as exc:
        payload = {"loadable": False, "error": str(exc)}
    sys.stdout.write("\n" + _MARK + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
