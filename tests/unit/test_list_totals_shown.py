"""A total past the list's counting bound (issue 13: `pagination.total_is_estimate`) as the
CLI's page line, the SDK's page and core's Page show it: a lower bound, never a count."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from mlx_platform import wire_examples
from mlx_platform.cli import render
from mlx_platform.core.paging import Page
from mlx_platform.sdk._pages import SyncPage
from mlx_platform.wire import Pagination, PluginSummary

SUMMARY = PluginSummary.model_validate(
    {**wire_examples.PLUGIN_SUMMARY, "created_at": datetime(2026, 12, 3, tzinfo=UTC)}
)


def page_line(pagination: Pagination, monkeypatch: pytest.MonkeyPatch) -> str:
    file = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=file, width=200, highlight=False))
    render.render_plugin_list([SUMMARY], pagination, every_page=False)
    return file.getvalue().splitlines()[-1]


def test_the_cli_says_more_than_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    estimated = Pagination(page=1, limit=1, total=10_000, has_next=True, total_is_estimate=True)
    assert page_line(estimated, monkeypatch) == (
        "page 1: 1 of more than 10,000 plugin(s) (1 per page); more with --page 2 or --all"
    )
    counted = Pagination(page=2, limit=1, total=2, has_next=False)
    assert page_line(counted, monkeypatch) == "page 2: 1 of 2 plugin(s) (1 per page)"


def test_the_sdk_page_shows_a_lower_bound_and_follows_has_next() -> None:
    fetched: list[int] = []

    def fetch(number: int) -> SyncPage[PluginSummary]:
        fetched.append(number)
        last = Pagination(page=number, limit=1, total=10_001, has_next=False)
        return SyncPage([SUMMARY], last, fetch)

    first = SyncPage(
        [SUMMARY],
        Pagination(page=1, limit=1, total=10_000, has_next=True, total_is_estimate=True),
        fetch,
    )
    assert "total=>10000" in repr(first)
    assert len(list(first)) == 2 and fetched == [2]  # has_next drives the walk, not total


def test_a_page_that_says_whether_more_follow_is_believed_over_its_total() -> None:
    assert Page([1], page=1, limit=1, total=10_000, total_is_estimate=True, more=True).has_next
    assert not Page([1], page=9, limit=1, total=9, total_is_estimate=False, more=False).has_next
    # a listing that counts everything: the total tells
    assert Page([1], page=1, limit=1, total=2).has_next
    assert not Page([1], page=2, limit=1, total=2).has_next
