"""A health round over 1,000 in-process plugins, 10 of them hanging in health_check()."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from _common import Figure

from mlx_platform.core.context import Core
from mlx_platform.plugins import Plugin
from mlx_platform.runtime.host import InProcessInstance
from mlx_platform.runtime.monitor import check_all
from mlx_platform.settings import Settings

TIMEOUT = 1.0
_RELEASE = threading.Event()


class QuickPlugin(Plugin):
    def health_check(self) -> bool:
        time.sleep(0.001)  # a real check talks to something: a millisecond each
        return True


class HangingPlugin(Plugin):
    def health_check(self) -> bool:
        _RELEASE.wait(3600)
        return True


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), health_timeout=TIMEOUT, health_concurrency=16)
        core = Core.create(settings)
        instances = {}
        for i in range(1000):
            cls = HangingPlugin if i % 100 == 0 else QuickPlugin
            inst = InProcessInstance(f"plugin_p{i}_001", cls())
            inst._mark_started()
            instances[inst.plugin_id] = inst
        t0 = time.perf_counter()
        results = check_all(instances, TIMEOUT, settings.health_concurrency)
        elapsed = time.perf_counter() - t0
        _RELEASE.set()
        core.db.dispose()
    hung = sum(1 for r in results.values() if r["status"] != "healthy")
    assert hung == 10, hung
    return [
        Figure(
            "health_fanout_1000_plugins_10_hanging",
            elapsed,
            "s",
            TIMEOUT + 1.0,
            TIMEOUT,
            "(one health timeout)",
        )
    ]


if __name__ == "__main__":
    for f in run():
        print(f.line())
