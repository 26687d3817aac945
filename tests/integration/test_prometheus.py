"""`/metrics` at catalogue scale: a series per plugin only for the plugins stored active, and
counts by status for the whole catalogue."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.conftest import LiveServer, register


def series(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in the Prometheus text format."""
    out = {}
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def test_only_watched_plugins_have_series_and_every_status_is_counted(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    srv = server_factory(seed_builtin_plugins="false")
    with srv.client() as admin:
        idle = [register(admin, f"{unique_name}_{n}") for n in range(3)]
        running = register(admin, f"{unique_name}_run")
        r = admin.post(f"/v1/plugins/{running}/activate", json={"configuration": {}})
        assert r.status_code == 200, r.text
        text = srv.anonymous.get("/metrics").text
    active = series(text, "mlx_plugin_active")
    assert active == {f'plugin_id="{running}"': 1.0}
    assert all(i not in text for i in idle)
    health = series(text, "mlx_plugin_health")
    assert list(health) == [f'plugin_id="{running}",status="healthy"']
    assert series(text, "mlx_plugins") == {
        'status="registered"': 3.0,
        'status="active"': 1.0,
        'status="inactive"': 0.0,
        'status="error"': 0.0,
    }
