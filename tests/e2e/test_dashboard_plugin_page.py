"""The dashboard's plugin page, end to end in headless Chromium against a live `mlx serve`
(issue 15, "Plugin"): the configuration form saves through the API and shows the API's own
refusal, naming the field, when a value breaks the schema (and nothing changes); a field that
restarts the plugin waits for a restart unless one is allowed, as the API says; the deactivate
button deactivates; the time range picker asks the metrics endpoint for that granularity.

The browser, the server and the recording of every request come from test_dashboard.py: each
request the page made must be a documented API path, every control labelled.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.e2e.test_dashboard import (  # noqa: F401 - fixtures, found by pytest by name
    Dashboard,
    browser,
    dashboard,
    documented_paths,
)

PLUGIN = "plugin_sqlite_source_001"  # an example plugin: database_path, read_only, max_rows


def _configuration(d: Dashboard) -> dict[str, object]:
    with d.server.client(scopes=("plugins:read",)) as c:
        r = c.get(f"/v1/plugins/{PLUGIN}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"]["configuration"])


def test_configure_from_the_form_shows_the_apis_refusal_then_saves(
    dashboard: Dashboard,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    sqlite3.connect(db).close()
    dashboard.sign_in(dashboard.server.admin_token)
    dashboard.plugin(PLUGIN)
    page = dashboard.page
    page.get_by_label("database_path").fill(str(db))
    page.get_by_role("button", name="Activate", exact=True).click()
    page.get_by_role("status").filter(has_text="Activated").wait_for()
    before = _configuration(dashboard)

    # a value beyond the schema's maximum: the API refuses it, the page says so in its words
    page.get_by_label("max_rows").fill("100001")
    with page.expect_response(lambda r: r.url.endswith("/configuration")) as answer:
        page.get_by_role("button", name="Save configuration").click()
    refusal = answer.value.json()
    assert answer.value.status == 422 and refusal["success"] is False, refusal
    error = page.get_by_test_id("api-error")
    error.wait_for()
    assert error.get_attribute("data-code") == refusal["error"]["code"]
    assert refusal["error"]["message"] in error.inner_text()
    assert "max_rows" in error.inner_text()  # the field the API names
    assert _configuration(dashboard) == before  # nothing changed

    # a good value: saved, said with the fields the API updated
    page.get_by_label("max_rows").fill("250")
    page.get_by_role("button", name="Save configuration").click()
    page.get_by_role("status").filter(has_text="Configuration updated: max_rows").wait_for()
    assert _configuration(dashboard)["max_rows"] == 250
    assert page.get_by_test_id("api-error").count() == 0

    # a field that restarts the plugin, without allowing a restart: it waits for one
    read_only = page.get_by_label("read_only")
    read_only.set_checked(not read_only.is_checked())
    page.get_by_role("button", name="Save configuration").click()
    notice = page.get_by_role("status").filter(has_text="waiting for a restart: read_only")
    notice.wait_for()
    with dashboard.server.client(scopes=("plugins:read",)) as c:
        detail = c.get(f"/v1/plugins/{PLUGIN}").json()["data"]
    assert detail["pending_restart"] == ["read_only"], detail
    dashboard.shot("plugin-configured")

    # the deactivate button
    page.get_by_role("button", name="Deactivate", exact=True).click()
    page.get_by_role("status").filter(has_text="Deactivated: inactive").wait_for()
    with dashboard.server.client(scopes=("plugins:read",)) as c:
        assert c.get(f"/v1/plugins/{PLUGIN}").json()["data"]["status"] == "inactive"


def test_the_time_range_picker_asks_for_that_granularity(
    dashboard: Dashboard,  # noqa: F811 - the fixture imported above
) -> None:
    dashboard.sign_in(dashboard.server.admin_token)
    dashboard.plugin(PLUGIN)
    page = dashboard.page
    for granularity in ("hour", "day", "minute"):
        with page.expect_response(
            lambda r, g=granularity: (
                "/metrics" in r.url and parse_qs(urlsplit(r.url).query).get("granularity") == [g]
            )
        ) as answer:
            # each radio is labelled "<granularity> (<range>)": "minute (last hour)"
            page.get_by_role("radio", name=re.compile(f"^{granularity} ")).check()
        assert answer.value.status == 200, answer.value.text()
        report = answer.value.json()["data"]
        assert report["granularity"] == granularity
        page.get_by_test_id("chart-executions").wait_for()
