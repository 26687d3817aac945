"""The Prometheus text format for `/metrics`: invocations, errors, latency, health per plugin.

A custom collector reads the recorder's running totals at scrape time, so the invocation hot
path pays nothing for Prometheus. Invocations, latency and live instances are this replica's
own, labelled `node`; health and status are the stored, shared ones: a series per plugin for
the plugins stored `active` (the ones that should run), and for the whole
catalogue only counts by status (`mlx_plugins`): 100,000 registered plugins are not 200,000
series, nor a 15 MB answer read from 100,000 rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mlx_platform.core.context import Core
from mlx_platform.core.registry import stored_states
from mlx_platform.core.sketch import RELATIVE_ACCURACY, LatencySketch

BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HEALTH = {"healthy": 1.0, "degraded": 0.5}


def _cumulative(sketch: LatencySketch) -> list[tuple[str, float]]:
    """Histogram buckets (le in seconds, cumulative count) from a sketch's buckets."""
    gamma = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
    out: list[tuple[str, float]] = []
    for le in BUCKETS_S:
        le_ms = le * 1000
        # bucket k holds values in (gamma**(k-1), gamma**k]: whole buckets at or under le
        n = sketch.zero + sum(c for k, c in sketch.buckets.items() if gamma**k <= le_ms)
        out.append((repr(le), float(n)))
    out.append(("+Inf", float(sketch.count)))
    return out


class PluginCollector(Collector):
    def __init__(self, core: Core) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        # this replica's own series, labelled with its node: every replica exports what went
        # through it, and a sum over `node` gives the cluster's figures. Read from memory up
        # to the last call: a scrape no longer writes metrics to storage (the flush loop does)
        metrics = self.core.metrics
        node = metrics.node_id
        calls = CounterMetricFamily(
            "mlx_plugin_invocations",
            "Invocations through this replica's runtime",
            labels=["plugin_id", "outcome", "node"],
        )
        latency = HistogramMetricFamily(
            "mlx_plugin_invocation_duration_seconds",
            "Invocation duration, through this replica",
            labels=["plugin_id", "node"],
        )
        for plugin_id, t in sorted(metrics.snapshot().items()):
            calls.add_metric([plugin_id, "success", node], t.count - t.errors)
            calls.add_metric([plugin_id, "error", node], t.errors)
            latency.add_metric([plugin_id, node], _cumulative(t.sketch), t.sum_ms / 1000)
        watched, counts = stored_states(self.core)
        health = GaugeMetricFamily(
            "mlx_plugin_health",
            "1 healthy, 0.5 degraded, 0 otherwise (last check); plugins stored active",
            labels=["plugin_id", "status"],
        )
        up = GaugeMetricFamily(
            "mlx_plugin_active",
            "1: the plugin's stored status is active (the others have no series of their "
            "own: mlx_plugins counts them)",
            labels=["plugin_id"],
        )
        for state in watched:
            health.add_metric(
                [state.plugin_id, state.health_status], _HEALTH.get(state.health_status, 0.0)
            )
            up.add_metric([state.plugin_id], 1.0 if state.status == "active" else 0.0)
        stored = GaugeMetricFamily(
            "mlx_plugins", "Plugins stored, by stored status", labels=["status"]
        )
        for status in ("registered", "active", "inactive", "error"):
            stored.add_metric([status], float(counts.get(status, 0)))
        running = GaugeMetricFamily(
            "mlx_plugin_instances", "Live plugin instances in this replica", labels=["node"]
        )
        running.add_metric([node], float(len(self.core.host.instances)))
        yield from (calls, latency, health, up, stored, running)


def render(core: Core) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PluginCollector(core))
    return generate_latest(registry)
