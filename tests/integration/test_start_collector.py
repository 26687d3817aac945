"""The garbage collector around the service's start (server/app.py lifespan, cli/main.py
`serve`; docs/decisions.md "Start-up"): `mlx serve` loads with the collector off, and once
the service is ready what it loaded is frozen and the collector is on again, so a service
never runs without one. In this process, on a real SQLite file."""

from __future__ import annotations

import gc
from pathlib import Path

from tests.conftest import start_inprocess


def test_the_collector_is_on_once_ready_and_what_was_loaded_is_frozen(tmp_path: Path) -> None:
    was_enabled = gc.isenabled()
    gc.unfreeze()
    gc.disable()  # as `mlx serve` leaves it while the service loads
    try:
        server = start_inprocess(tmp_path / "home")
        try:
            assert gc.isenabled()
            assert gc.get_freeze_count() > 10_000  # the framework, the models, the routes
            with server.client() as c:
                assert c.get("/v1/plugins").status_code == 200
        finally:
            server.stop()
    finally:
        gc.unfreeze()
        if not was_enabled:
            gc.disable()
