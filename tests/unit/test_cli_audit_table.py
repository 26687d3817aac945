"""`mlx audit`'s table at the widths people use: it fits, and folding loses nothing, even with
the widest values the trail holds (an identity provider's subject, a long plugin id, the
longest action and error code)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from mlx_platform.cli import render
from mlx_platform.wire import AuditEvent, Pagination
from tests.e2e.test_cli_plugins import audit_table

AT = datetime(2026, 12, 2, 1, 54, 23, 123456, tzinfo=UTC)
EVENTS = [
    AuditEvent(
        id=3,
        at=AT,
        actor="3f2b8c1e-9d4a-4f6b-8e2a-7c5d9b1a0e42",
        action="auto_register",
        plugin_id="plugin_a_plugin_whose_name_is_as_long_as_people_make_them_001",
        outcome="failure",
        error_code="PLUGIN_HEALTH_CHECK_FAILED",
        request_id="req_0123456789abcdef",
    ),
    AuditEvent(
        id=2,
        at=AT,
        actor="alice@example.com",
        action="register",
        plugin_id="plugin_sqlite_source_001",
        outcome="success",
        request_id="req-register-1",
    ),
    AuditEvent(id=1, at=AT, actor="service", action="delete", outcome="success"),
]
ROWS = [
    (
        "2026-12-02 01:54:23Z",
        "3f2b8c1e-9d4a-4f6b-8e2a-7c5d9b1a0e42",
        "auto_register",
        "plugin_a_plugin_whose_name_is_as_long_as_people_make_them_001",
        "failure",
        "PLUGIN_HEALTH_CHECK_FAILED",
        "req_0123456789abcdef",
    ),
    (
        "2026-12-02 01:54:23Z",
        "alice@example.com",
        "register",
        "plugin_sqlite_source_001",
        "success",
        "",
        "req-register-1",
    ),
    ("2026-12-02 01:54:23Z", "service", "delete", "-", "success", "", "-"),
]


def rendered(width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    file = io.StringIO()
    console = Console(file=file, width=width, highlight=False, soft_wrap=False)
    monkeypatch.setattr(render, "console", console)
    render.render_audit(EVENTS, Pagination(page=1, limit=3, total=7, has_next=True))
    return file.getvalue()


@pytest.mark.parametrize("width", [80, 100, 132])
def test_the_table_fits_and_folding_loses_nothing(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = rendered(width, monkeypatch)
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width, out
    assert "…" not in out
    assert audit_table(out) == ROWS, out  # the date and the time each whole, every id whole
    assert lines[-1] == "page 1: 3 of 7 event(s), newest first (3 per page); more with --page 2"


def test_a_wide_terminal_shows_one_line_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    out = rendered(200, monkeypatch)
    assert len(out.splitlines()) == 2 + len(EVENTS) + 1, out
    assert audit_table(out) == ROWS
