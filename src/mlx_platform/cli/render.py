"""What people see of `mlx plugins`, `mlx nodes` and `mlx audit` answers: rich tables and
fields on stdout (`--json` output and errors are output.py's)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from mlx_platform.cli.output import to_jsonable
from mlx_platform.wire import (
    ActivateResult,
    AuditEvent,
    CompositionResult,
    ConfigurationUpdateResult,
    DeactivateResult,
    DeleteResult,
    DiscoveryResult,
    HealthReport,
    InvokeResult,
    MetricsReport,
    Node,
    NodeInstance,
    Pagination,
    PluginDetail,
    PluginSummary,
    RegisterResult,
)

# A console writes to whatever sys.stdout is when it prints.
console = Console(highlight=False, soft_wrap=False)


# ---------------------------------------------------------------- small helpers

_STATUS_STYLE = {
    "active": "green",
    "healthy": "green",
    "pass": "green",
    "registered": "cyan",
    "running": "green",
    "inactive": "dim",
    "skip": "dim",
    "not_started": "dim",
    "unknown": "dim",
    "degraded": "yellow",
    "error": "red",
    "unhealthy": "red",
    "fail": "red",
}


def status_text(status: str | None) -> Text:
    value = status or "-"
    return Text(value, style=_STATUS_STYLE.get(value, ""))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: `4s ago`, `12m ago`, `3h ago`, `2d ago`."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = max(((now or datetime.now(UTC)) - value).total_seconds(), 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def rate(value: float | None) -> str:
    """A success rate: `99.5%`, or `-` where no call was made (the API's null)."""
    return "-" if value is None else f"{value:.1%}"


def joined(values: Iterable[Any]) -> str:
    items = [str(v) for v in values]
    return ", ".join(items) if items else "-"


def compact(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(", ", ": "))


def _table(*columns: str, title: str | None = None, whole: tuple[int, ...] = ()) -> Table:
    """A table whose cells fold rather than lose text; the `whole` columns (ids, statuses)
    never wrap, so that an id can be copied and a status read at a glance."""
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left"
    )
    for index, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=index in whole)
    return table


def _fields(rows: Sequence[tuple[str, str | Text]], title: str | None = None) -> Table:
    grid = Table(box=None, show_header=False, title=title, title_justify="left", pad_edge=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


# ---------------------------------------------------------------- renderers


# Where a name, type or id may go onto the next line: after `_`, `-` or `.`, or at a space.
_WORD = re.compile(r"[^_\-. ]+[_\-.]*[ ]*|[_\-. ]+")


def _words(text: str) -> list[str]:
    """`experiment_tracker` -> `experiment_`, `tracker`: the pieces a cell may break into."""
    return _WORD.findall(text) or [text]


def _wrapped(text: str, width: int) -> str:
    """`text` on lines of at most `width`, broken only between its words (a word longer than
    `width` stays whole on a line of its own, for rich to fold as a last resort)."""
    lines: list[str] = []
    line = ""
    for word in _words(text):
        if line and len(line + word.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += word
    lines.append(line.rstrip())
    return "\n".join(lines)


def _fit(
    rows: Sequence[Sequence[str]],
    headers: Sequence[str],
    flexible: Sequence[Sequence[int]],
    room: int,
) -> list[int] | None:
    """Column widths that fit `rows` into `room` with two spaces between columns, or None
    when the table fits as it is (three spaces). The columns of `flexible[0]` narrow first
    (the widest first, evenly), down to their longest word at most; if that is not enough,
    they stay there and those of `flexible[1]` narrow too, and so on. Every other column
    keeps its width; past the last group, rich folds what still does not fit."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    gaps = len(headers) - 1
    if sum(widths) + 3 * gaps <= room:
        return None
    longest_word = [
        max([len(h)] + [len(w.rstrip()) for r in rows for w in _words(r[i])])
        for i, h in enumerate(headers)
    ]
    shared = list(widths)
    for group in flexible:
        fixed = sum(w for i, w in enumerate(shared) if i not in group)
        narrowed = _share(
            [widths[i] for i in group], [longest_word[i] for i in group], room - 2 * gaps - fixed
        )
        for i, width in zip(group, narrowed, strict=True):
            shared[i] = width
        if sum(shared) + 2 * gaps <= room:
            break
    return shared


def render_plugin_list(
    plugins: Sequence[PluginSummary], pagination: Pagination, *, every_page: bool
) -> None:
    headers = ("ID", "NAME", "TYPE", "VERSION", "STATUS", "HEALTH")
    rows: list[tuple[str, ...]] = [
        (p.id, p.name, p.type, p.version, p.status, p.health.status or "-") for p in plugins
    ]
    # Too wide for the terminal (or a pipe's 80 columns): NAME narrows first (the ID holds it
    # too), then TYPE, broken between their words (`experiment_` / `tracker`); then the ID,
    # so that it stays whole
    # whenever it can be (it is what the other commands take); VERSION, STATUS and HEALTH
    # (one short word each) keep their width. No word is cut down to ~62 columns; narrower
    # than the longest words, rich folds them (no_wrap would cut text off instead).
    widths = _fit(rows, headers, [(1,), (2,), (0,)], console.width)
    table = _table(*headers, whole=() if widths else (0, 3, 4, 5))
    if widths:
        table.padding = (0, 1, 0, 0)  # two spaces between columns rather than three
        for column, width in zip(table.columns, widths, strict=True):
            column.width = width
        rows = [
            tuple(_wrapped(c, widths[i]) if i <= 2 else c for i, c in enumerate(row))
            for row in rows
        ]
    for row in rows:
        table.add_row(*row[:4], status_text(row[4]), status_text(row[5]))
    console.print(table)
    if every_page:
        console.print(f"{len(plugins)} plugin(s)")
    else:
        total = (
            f"more than {pagination.total:,}" if pagination.total_is_estimate else pagination.total
        )
        line = (
            f"page {pagination.page}: {len(plugins)} of {total} plugin(s)"
            f" ({pagination.limit} per page)"
        )
        if pagination.has_next:
            line += f"; more with --page {pagination.page + 1} or --all"
        console.print(line)


def render_plugin_detail(d: PluginDetail) -> None:
    meta = d.metadata
    status = status_text(d.status)
    if d.status_reason:
        status.append(f" ({d.status_reason})", style="")
    health = status_text(d.health.status)
    health.append(f"  last check {when(d.health.last_check)}, {ms(d.health.response_time_ms)}")
    operations = getattr(d, "operations", None) or []
    console.print(
        _fields(
            [
                ("id", d.id),
                ("name", f"{d.name} {d.version}"),
                ("type", d.type + (f" (category {d.category})" if d.category else "")),
                ("status", status),
                ("health", health),
                ("description", d.description or "-"),
                ("class", f"{d.class_path or '-'} (isolation {d.isolation or '-'})"),
                ("operations", joined(operations)),
                ("capabilities", joined(meta.get("capabilities") or [])),
                ("requires", joined(meta.get("requires") or [])),
                ("conflicts with", joined(meta.get("conflicts_with") or [])),
                ("configuration", compact(d.configuration) if d.configuration else "-"),
                ("pending restart", joined(d.pending_restart)),
                ("registered", when(d.created_at)),
                ("activated", when(d.activated_at)),
            ]
        )
    )
    if d.configuration_schema:
        schema = _table("FIELD", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION", title="\nSchema")
        for name, spec in d.configuration_schema.items():
            spec = spec if isinstance(spec, dict) else {}
            default = spec.get("default")
            schema.add_row(
                name + (" (secret)" if spec.get("secret") else ""),
                str(spec.get("type", "-")),
                "yes" if spec.get("required") else "",
                "" if default is None else compact(default),
                spec.get("description") or "",
            )
        console.print(schema)
    pm = d.performance_metrics
    console.print(
        f"\ncalls {pm.execution_count}, success rate {rate(pm.success_rate)}, "
        f"avg {ms(pm.avg_execution_time_ms)}, {pm.throughput_ops_per_second:g} ops/s"
    )
    if d.pending_restart:
        _pending_hint(d.id, d.pending_restart)


def render_register(r: RegisterResult) -> None:
    verb = "would register" if r.dry_run else "registered"
    console.print(
        Text.assemble(f"{verb} {r.id} ({r.name} {r.version or ''}): status ", status_text(r.status))
    )
    v = r.validation_results
    checks = _table("CHECK", "RESULT")
    checks.add_row("schema valid", _yes_no(v.schema_valid))
    checks.add_row(
        "class loadable",
        _yes_no(v.class_loadable, "" if v.class_loadable else f" ({v.class_error})"),
    )
    checks.add_row(
        "dependencies available",
        _yes_no(v.dependencies_available, f" (missing {joined(v.missing_dependencies)})")
        if not v.dependencies_available
        else _yes_no(True),
    )
    checks.add_row("no conflicts", _yes_no(not v.conflicts_detected))
    console.print(checks)
    for step in r.next_steps:
        console.print(f"- {step}")


def _yes_no(ok: bool, extra: str = "") -> Text:
    return Text("yes" if ok else "no", style="green" if ok else "red") + Text(extra)


def render_activate(r: ActivateResult) -> None:
    verb = "would be" if r.dry_run else "is"
    line = Text.assemble(f"{r.id} {verb} ", status_text(r.status))
    if r.activation_time:
        line.append(f" since {when(r.activation_time)}")
    console.print(line)
    if r.health_check is not None:
        hc = r.health_check
        health = Text.assemble("health: ", status_text(hc.status))
        if hc.response_time_ms is not None:
            health.append(f" ({ms(hc.response_time_ms)})")
        if hc.message:
            health.append(f" {hc.message}")
        console.print(health)


def render_deactivate(r: DeactivateResult) -> None:
    console.print(
        Text.assemble(
            f"{r.id} is ",
            status_text(r.status),
            f" since {when(r.deactivation_time)} (pending operations: {r.pending_operations})",
        )
    )


def render_delete(r: DeleteResult) -> None:
    also = " (deactivated first)" if r.deactivated else ""
    console.print(f"{r.id} unregistered{also}")


def render_configuration_update(r: ConfigurationUpdateResult) -> None:
    verb = "would update" if r.dry_run else "updated"
    if r.updated_fields:
        console.print(f"{r.id}: {verb} {joined(r.updated_fields)}")
    else:
        console.print(f"{r.id}: nothing changed")
    console.print(
        f"restart required: {'yes' if r.restart_required else 'no'}, "
        f"restarted: {'yes' if r.restarted else 'no'}, effective {when(r.effective_time)}"
    )
    if r.pending_restart:
        _pending_hint(r.id, r.pending_restart, stored=not r.dry_run)


def _pending_hint(plugin_id: str, fields: Sequence[str], *, stored: bool = True) -> None:
    """What waits for a restart, and the commands that apply it."""
    what = "stored, not applied yet" if stored else "would be stored, not applied"
    console.print(
        Text(f"pending restart: {joined(fields)} ({what}: the plugin runs the old values)"),
        style="yellow",
    )
    console.print(
        f"restart with: mlx plugins configure {plugin_id} --allow-restart "
        f"(or mlx plugins deactivate {plugin_id}, then activate)",
        soft_wrap=True,
    )


def render_health(h: HealthReport) -> None:
    console.print(Text.assemble(f"{h.plugin_id}: ", status_text(h.status)))
    c = h.checks
    table = _table("CHECK", "STATUS", "DETAIL")
    connectivity = [ms(c.connectivity.response_time_ms)] if c.connectivity.response_time_ms else []
    if c.connectivity.message:
        connectivity.append(c.connectivity.message)
    table.add_row("connectivity", status_text(c.connectivity.status), "; ".join(connectivity))
    usage = []
    if c.resource_usage.memory_usage_mb is not None:
        usage.append(f"{c.resource_usage.memory_usage_mb:.0f} MB")
    if c.resource_usage.cpu_usage_percent is not None:
        usage.append(f"{c.resource_usage.cpu_usage_percent:.0f}% CPU")
    table.add_row("resource usage", status_text(c.resource_usage.status), ", ".join(usage))
    missing = c.dependencies.missing_dependencies
    table.add_row(
        "dependencies",
        status_text(c.dependencies.status),
        f"missing {joined(missing)}" if missing else "",
    )
    console.print(table)
    m = h.metrics
    console.print(
        f"uptime {m.uptime_seconds:.0f} s, requests {m.total_requests} "
        f"({m.successful_requests} ok, {m.failed_requests} failed), "
        f"avg {ms(m.avg_response_time_ms)}"
    )
    if h.replicas:
        replicas = _table(
            "NODE", "STATE", "PID", "HEALTH", "LAST ERROR", title="\nReplicas", whole=(0, 1, 2, 3)
        )
        for r in h.replicas:
            replicas.add_row(
                r.node_id,
                status_text(r.state),
                "-" if r.pid is None else str(r.pid),
                status_text(r.health_status),
                r.last_error or "",
            )
        console.print(replicas)
    if h.node_id:
        console.print(f"answered by node {h.node_id}")


def render_metrics(m: MetricsReport) -> None:
    f = m.metrics
    console.print(
        f"{m.plugin_id}: {when(m.time_range.start)} to {when(m.time_range.end)}, by {m.granularity}"
    )
    console.print(
        _fields(
            [
                ("calls", str(f.execution_count)),
                ("errors", str(f.error_count)),
                ("success rate", rate(f.success_rate)),
                ("avg", ms(f.avg_execution_time_ms)),
                (
                    "p50 / p95 / p99",
                    f"{ms(f.p50_execution_time_ms)} / {ms(f.p95_execution_time_ms)} / "
                    f"{ms(f.p99_execution_time_ms)}",
                ),
                (
                    "memory",
                    f"avg {f.resource_usage.avg_memory_mb:.0f} MB, "
                    f"peak {f.resource_usage.peak_memory_mb:.0f} MB",
                ),
                ("cpu", f"avg {f.resource_usage.avg_cpu_percent:.0f}%"),
            ]
        )
    )
    if m.timeseries:
        table = _table("TIME", "CALLS", "AVG", "SUCCESS", "ERRORS")
        for point in m.timeseries:
            table.add_row(
                when(point.timestamp),
                str(point.execution_count),
                ms(point.avg_execution_time_ms),
                rate(point.success_rate),
                str(point.error_count),
            )
        console.print(table)
    else:
        console.print("no calls recorded in this range")


def render_discovery(result: DiscoveryResult) -> None:
    table = _table("NAME", "VERSION", "TYPE", "SOURCE", "COMPATIBLE", "REGISTERED AS", whole=(3, 5))
    for p in result.discovered_plugins:
        compatible = _yes_no(
            p.compatible, f" ({p.incompatible_reason})" if not p.compatible else ""
        )
        registered = p.plugin_id or "-"
        if p.auto_registered:
            registered += " (now)"
        table.add_row(p.name, p.version or "-", p.type or "-", p.source, compatible, registered)
    console.print(table)
    s = result.discovery_summary
    console.print(
        f"{s.total_discovered} discovered: {s.compatible_plugins} compatible, "
        f"{s.incompatible_plugins} incompatible, {s.auto_registered} registered now"
    )
    for e in result.errors:
        where = f" {e.location}" if e.location else ""
        console.print(Text(f"{e.source}{where}: {e.message}", style="yellow"))


def render_composition(c: CompositionResult) -> None:
    if c.composition_valid:
        console.print(Text("composition is valid", style="green"))
    else:
        console.print(Text("composition is NOT valid", style="red bold"))
    if c.conflicts:
        table = _table("CONFLICT", "PLUGINS", "MESSAGE", title="Conflicts")
        for conflict in c.conflicts:
            table.add_row(conflict.type, joined(conflict.plugins), conflict.message)
        console.print(table)
    if c.warnings:
        table = _table("SEVERITY", "WARNING", "PLUGINS", "MESSAGE", title="Warnings")
        for w in c.warnings:
            table.add_row(w.severity, w.type, joined(w.plugins), w.message)
        console.print(table)
    if c.synergies:
        table = _table("PLUGINS", "THROUGH", "BENEFITS", title="Synergies")
        for s in c.synergies:
            table.add_row(joined(s.plugins), joined(s.integration_points), joined(s.benefits))
        console.print(table)
    for rec in c.recommendations:
        console.print(f"- {rec}")
    if c.resolved:
        console.print(
            "resolved: " + joined(f"{r.get('name')} {r.get('version')}" for r in c.resolved)
        )


def render_invoke(r: InvokeResult) -> None:
    console.print(JSON.from_data(to_jsonable(r.result)))
    console.print(f"{r.plugin_id}.{r.operation}: {ms(r.duration_ms)}")


def _instance_states(instances: Sequence[NodeInstance]) -> str:
    """`2 running, 1 error`: how many plugin instances are in each state, running first."""
    if not instances:
        return "none"
    counts = Counter(i.state for i in instances)
    running = counts.pop("running", 0)
    return ", ".join([f"{running} running"] + [f"{n} {s}" for s, n in sorted(counts.items())])


def render_nodes(nodes: Sequence[Node]) -> None:
    table = _table("ID", "HOST", "PID", "ALIVE", "HEARTBEAT", "PLUGINS", whole=(2, 3, 4))
    # Ids keep the room the other columns leave (HOST and PLUGINS folded to 8 and 10 characters)
    # so that they stay whole, to be copied; only an id longer than that folds.
    pid_width = max([3] + [len(str(n.pid)) for n in nodes])
    others = 5 * 3 + 8 + pid_width + len("ALIVE") + len("HEARTBEAT") + len("2 running,")
    room = console.width - others
    if nodes and room >= 12:
        table.columns[0].width = min(max(len(n.id) for n in nodes), room)
    now = datetime.now(UTC)
    for n in nodes:
        table.add_row(
            n.id,
            n.host,
            str(n.pid),
            _yes_no(n.alive),
            ago(n.heartbeat_at, now),
            _instance_states(n.instances),
        )
    console.print(table)
    alive = sum(1 for n in nodes if n.alive)
    line = f"{len(nodes)} node(s), {alive} alive"
    answered = next((n.id for n in nodes if n.this_node), None)
    if answered:
        line += f"; answered by {answered}"
    console.print(line)


_OUTCOME_STYLE = {"success": "green", "failure": "red"}


def _share(widths: Sequence[int], minimums: Sequence[int], room: int) -> list[int]:
    """Narrow the widest columns first, down to a common width, until they fit `room`; a
    column never goes below its minimum (its header), nor above its own width."""

    def at(level: int) -> list[int]:
        return [max(min(w, level), m) for w, m in zip(widths, minimums, strict=True)]

    level = max(widths, default=0)
    while level > 0 and sum(at(level)) > room:
        level -= 1
    shared = at(level)
    spare = room - sum(shared)
    for i in sorted(range(len(shared)), key=lambda i: -widths[i]):  # what is left: widest first
        extra = min(spare, widths[i] - shared[i])
        if extra > 0:
            shared[i] += extra
            spare -= extra
    return shared


def render_audit(events: Sequence[AuditEvent], pagination: Pagination) -> None:
    headers = ("WHEN", "ACTOR", "ACTION", "PLUGIN", "OUTCOME", "CODE", "REQUEST")
    rows = [
        (
            when(e.at),
            e.actor,
            e.action,
            e.plugin_id or "-",
            e.outcome,
            e.error_code or "",
            e.request_id or "-",
        )
        for e in events
    ]
    table = _table(*headers, whole=(2, 4))
    for row in rows:
        table.add_row(*row[:4], Text(row[4], style=_OUTCOME_STYLE.get(row[4], "")), *row[5:])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    gaps = len(headers) - 1
    if sum(widths) + 3 * gaps > console.width:
        # Too wide: two spaces between columns rather than three; then, if still too wide,
        # the time under its date, ACTION and OUTCOME (one short word each) whole, and the
        # widest of ACTOR, PLUGIN, CODE and REQUEST fold first, evenly. Nothing is cut.
        table.padding = (0, 1, 0, 0)
        if sum(widths) + 2 * gaps > console.width:
            widths[0] = min(widths[0], len("2026-12-02"))
            flexible = (1, 3, 5, 6)
            fixed = sum(w for i, w in enumerate(widths) if i not in flexible)
            shared = _share(
                [widths[i] for i in flexible],
                [len(headers[i]) for i in flexible],
                console.width - 2 * gaps - fixed,
            )
            for i, width in zip(flexible, shared, strict=True):
                widths[i] = width
            for column, width in zip(table.columns, widths, strict=True):
                column.width = width
    console.print(table)
    line = (
        f"page {pagination.page}: {len(events)} of {pagination.total} event(s), newest first"
        f" ({pagination.limit} per page)"
    )
    if pagination.has_next:
        line += f"; more with --page {pagination.page + 1}"
    console.print(line)
