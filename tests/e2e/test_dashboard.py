"""The web dashboard at `/ui`, end to end: headless Chromium (Debian's `chromium`, driven by
Playwright without a browser download) against a live `mlx serve`.

Signs in with a token; sees the example plugins; activates one and sees its health turn
green; invokes it from the page and sees the chart count the real invocations; sees the
conflict explained when a second experiment tracker is activated; a read-only token cannot
press a write button; an invalid or expired token returns to the sign-in form with the API's
message. Every request the page makes goes to the service and is one the OpenAPI documents.
Every page shown is audited with axe-core (the copy the `axe-playwright-python` package ships,
injected into the page: nothing is downloaded), and a violation of serious or critical impact
fails the test.

A screenshot of each page is kept under the test's tmp dir (and, with
MLX_UPDATE_SCREENSHOTS=1, copied to docs/screenshots/ for the README).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import FIXTURE_PLUGINS, LiveServer, free_port, http_client, register

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
INSTALL_HINT = (
    "The dashboard tests need Debian's Chromium: `sudo apt-get install -y chromium` "
    "(README, 'Dashboard'); set MLX_CHROMIUM to use another Chromium binary"
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 20_000
# Every form control named by a <label> or aria-label, every button by its text or aria-label
UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.tagName === 'BUTTON'
    ? !(el.textContent.trim() || el.getAttribute('aria-label'))
    : !((el.labels && el.labels.length) || el.getAttribute('aria-label')
        || el.getAttribute('aria-labelledby')))
  .map(el => el.outerHTML.slice(0, 120))"""
# axe-core's impacts that fail a page (minor and moderate ones are reported by axe, not failed)
FAILING_IMPACTS = ("serious", "critical")


def accessibility_violations(page: Any) -> list[str]:
    """axe-core's violations of serious or critical impact on the page as it is now, one line
    each: the rule, its impact, its help text and the elements."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        pytest.fail(
            "the `axe-playwright-python` package is missing: `make test` installs it",
            pytrace=False,
        )
    response = Axe().run(page, options={"resultTypes": ["violations"]}).response
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
        for v in response["violations"]
        if v["impact"] in FAILING_IMPACTS
    ]


def chromium_path() -> str:
    path = os.environ.get("MLX_CHROMIUM") or CHROMIUM
    if not Path(path).is_file():
        pytest.fail(f"no Chromium at {path}. {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is missing: `make test` installs it", pytrace=False)
    path = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path,
            headless=True,
            # nothing but the service (an IP literal, never resolved) is reachable
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def documented_paths(process_live_server: LiveServer) -> list[re.Pattern[str]]:
    """The OpenAPI document's paths, as patterns (`{plugin_id}` matches one segment)."""
    doc = process_live_server.anonymous.get("/openapi.json", timeout=30).json()
    return [
        re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$")
        for p in doc["paths"]
    ]


class Dashboard:
    """One browser context (its own sessionStorage) on the service's /ui, recording every
    request the page makes."""

    def __init__(self, browser: Any, server: LiveServer, shots: Path) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        # what the browser refused under the page's Content-Security-Policy (server/ui.py)
        self.refused: list[str] = []
        self.page.on(
            "console",
            lambda m: self.refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        self.shots = shots

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server.url}/ui{fragment}")

    def sign_in(self, token: str, *, valid: bool = True) -> None:
        self.open()
        self.page.get_by_label("Bearer token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        if valid:  # the catalogue comes
            self.page.locator("tr[data-plugin-id]").first.wait_for()

    def plugin(self, plugin_id: str) -> None:
        self.page.goto(f"{self.server.url}/ui/#/plugins/{plugin_id}")
        self.page.get_by_role("heading", level=1).wait_for()

    def add_to_composition(self, name: str) -> None:
        """On the composition page: search for `name` and add it (the search is the list
        API's; the page shows the matches once typing pauses)."""
        self.page.get_by_label("Search plugins").fill(name)
        found = self.page.locator(f"[data-testid=found][data-search='{name}'][aria-busy=false]")
        found.get_by_role("button", name=f"Add {name}", exact=True).click()
        self.page.locator(f"[data-chosen='{name}']").wait_for()

    def shot(self, name: str) -> Path:
        """A screenshot of the page, after checking that every control on it has a label and
        that axe-core finds nothing serious or critical on it."""
        unlabelled = self.page.evaluate(UNLABELLED_CONTROLS)
        assert unlabelled == [], f"controls without a label on {name}: {unlabelled}"
        violations = accessibility_violations(self.page)
        assert violations == [], f"accessibility violations on {name}: {violations}"
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("MLX_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / path.name)
        return path

    def check_requests(self, documented: list[re.Pattern[str]]) -> None:
        """Every request went to the service, and every API call is a documented path; the
        page's Content-Security-Policy refused nothing it does."""
        assert self.refused == [], f"refused by the Content-Security-Policy: {self.refused}"
        origin = self.server.url.rstrip("/")
        for url in self.requests:
            assert url.startswith(origin + "/"), f"a request left the service: {url}"
            path = urlsplit(url).path
            if path.startswith("/ui"):
                continue
            assert any(p.match(path) for p in documented), f"undocumented request: {url}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def dashboard(
    browser: Any,
    process_live_server: LiveServer,
    documented_paths: list[re.Pattern[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    d = Dashboard(browser, process_live_server, tmp_path_factory.getbasetemp() / "screenshots")
    d.shots.mkdir(exist_ok=True)
    yield d
    d.check_requests(documented_paths)
    d.close()


def api_figures(server: LiveServer, plugin_id: str) -> dict[str, Any]:
    with server.client(scopes=("plugins:read",)) as c:
        r = c.get(f"/v1/plugins/{plugin_id}/metrics", params={"granularity": "minute"})
    assert r.status_code == 200, r.text
    figures: dict[str, Any] = r.json()["data"]["metrics"]
    return figures


def api_points(server: LiveServer, plugin_id: str) -> list[dict[str, Any]]:
    """The minute series of the last hour, as the plugin page asks for it."""
    end = datetime.now(UTC) + timedelta(minutes=1)
    window = {"start_time": (end - timedelta(hours=1)).isoformat(), "end_time": end.isoformat()}
    with server.client(scopes=("plugins:read",)) as c:
        r = c.get(f"/v1/plugins/{plugin_id}/metrics", params={"granularity": "minute", **window})
    assert r.status_code == 200, r.text
    return list(r.json()["data"]["timeseries"])


def latency_rows(chart: Any) -> dict[str, list[float]]:
    """The latency chart's figures table: time -> [p50, p95, p99], rows with values only."""
    rows: dict[str, list[float]] = {}
    for row in chart.locator("details tbody tr").all():
        at = row.locator("td").first.text_content() or ""
        cells = [
            row.locator(f"td[data-series={q}]").text_content() or "" for q in ("p50", "p95", "p99")
        ]
        if any(cells):
            rows[at] = [float(c) for c in cells]
    return rows


def test_sign_in_and_see_the_example_plugins(dashboard: Dashboard) -> None:
    dashboard.open()
    page = dashboard.page
    page.get_by_label("Bearer token").wait_for()
    assert page.locator("input[name=token]").count() == 1
    dashboard.shot("sign-in")

    # keyboard only: the field has the focus after a Tab, Enter submits
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.name") == "token"
    page.keyboard.type(dashboard.server.admin_token)
    page.keyboard.press("Enter")

    table = page.get_by_role("table", name="Plugins")
    table.locator("tr[data-plugin-id]").first.wait_for()
    with dashboard.server.client() as c:
        expected = {p["id"] for p in c.get("/v1/plugins").json()["data"]}
    assert {"plugin_sqlite_source_001", "plugin_local_tracker_001"} <= expected
    shown = set(
        table.locator("tr[data-plugin-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.pluginId)"
        )
    )
    assert shown == expected
    assert "plugins" in page.get_by_test_id("page-info").inner_text()
    # the filters narrow the list through the API
    page.get_by_label("Type").select_option("experiment_tracker")
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-plugin-id]')]"
        ".every(r => r.children[1].textContent === 'experiment_tracker')"
    )
    page.get_by_label("Type").select_option("")
    page.get_by_label("Search").fill("sqlite")
    page.wait_for_function("() => document.querySelectorAll('tr[data-plugin-id]').length === 1")
    page.get_by_label("Search").fill("")
    table.locator("tr[data-plugin-id]").nth(len(expected) - 1).wait_for()
    dashboard.shot("catalogue-signed-in")


SHOWN_IDS = (
    "() => [...document.querySelectorAll('tr[data-plugin-id]')].map(r => r.dataset.pluginId)"
)


def wait_for_rows(page: Any, ids: list[str]) -> None:
    """Until the catalogue shows exactly these rows, in this order."""
    try:
        page.wait_for_function(
            f"ids => JSON.stringify(({SHOWN_IDS})()) === JSON.stringify(ids)", arg=ids
        )
    except Exception:
        assert page.evaluate(SHOWN_IDS) == ids  # says how they differ
        raise


def test_sorting_by_name_orders_every_page_through_the_api(dashboard: Dashboard) -> None:
    """A click on the Name header asks the list API for `sort=name`: the first page holds the
    first names of the whole catalogue and the next page the following ones (where sorting
    the shown page only reordered the plugins created first); a second click reverses it, a
    third returns to creation order; by keyboard too; a search, which is ranked, sends no
    sort and the headers say so."""
    server = dashboard.server
    limit = 20  # the catalogue's page
    with server.client() as c:
        for i in (7, 22, 3, 15, 0, 19, 11, 24, 5, 13, 1, 20, 9, 17, 2, 23, 6, 14, 10, 21):
            register(c, f"aa_sorted_{i:02d}")  # created out of name order: two pages and more
        for i in (4, 18, 8, 16, 12):
            register(c, f"aa_sorted_{i:02d}")

        def api(page: int, sort: str | None = None) -> list[dict[str, Any]]:
            params: dict[str, Any] = {"limit": limit, "page": page}
            if sort:
                params["sort"] = sort
            r = c.get("/v1/plugins", params=params)
            assert r.status_code == 200, r.text
            return list(r.json()["data"])

        by_name = [api(1, "name"), api(2, "name")]
        by_name_reversed = api(1, "-name")
        created = api(1)
    names = [p["name"] for p in by_name[0] + by_name[1]]
    assert len(by_name[0]) == limit and by_name[1] and names == sorted(names)  # both pages
    assert {p["id"] for p in by_name[0]} != {p["id"] for p in created}

    dashboard.sign_in(server.admin_token)
    page = dashboard.page
    name = page.get_by_role("button", name="Name", exact=True)
    with page.expect_request(lambda r: "sort=name" in r.url and "/v1/plugins?" in r.url):
        name.click()
    wait_for_rows(page, [p["id"] for p in by_name[0]])
    header = page.locator("th[aria-sort]")
    assert header.count() == 1 and header.get_attribute("aria-sort") == "ascending"
    assert header.inner_text().startswith("Name")
    dashboard.shot("catalogue-sorted-by-name")
    page.get_by_role("button", name="Next page").click()
    wait_for_rows(page, [p["id"] for p in by_name[1]])
    assert "Page 2" in page.get_by_test_id("page-info").inner_text()

    # again: descending, from the first page; then the API's default order; by keyboard
    name.focus()
    with page.expect_request(lambda r: "sort=-name" in r.url):
        page.keyboard.press("Enter")
    wait_for_rows(page, [p["id"] for p in by_name_reversed])
    assert page.locator("th[aria-sort]").get_attribute("aria-sort") == "descending"
    assert "Page 1" in page.get_by_test_id("page-info").inner_text()
    page.keyboard.press("Space")
    wait_for_rows(page, [p["id"] for p in created])
    assert page.locator("th[aria-sort]").count() == 0

    # sorted, then a search: ranked, no sort asked for, the headers cannot sort meanwhile
    name.click()
    wait_for_rows(page, [p["id"] for p in by_name[0]])
    page.get_by_label("Search").fill("aa_sorted_1")
    page.wait_for_function("() => document.querySelectorAll('tr[data-plugin-id]').length === 10")
    assert name.is_disabled() and "ranked" in (name.get_attribute("title") or "")
    assert page.locator("th[aria-sort]").count() == 0
    asked = [u for u in dashboard.requests if "/v1/plugins?" in u and "search=" in u]
    assert asked and not [u for u in asked if "sort=" in u], asked
    page.get_by_label("Search").fill("")
    wait_for_rows(page, [p["id"] for p in by_name[0]])  # the sort is back with the list
    assert not name.is_disabled()


def test_activate_see_health_turn_green_invoke_and_count(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs(id integer primary key, model text, auc real)")
        conn.executemany("insert into runs(model, auc) values (?, ?)", [("xgb", 0.91)])
    plugin_id = "plugin_sqlite_source_001"
    before = api_figures(dashboard.server, plugin_id)["execution_count"]
    dashboard.sign_in(dashboard.server.admin_token)
    dashboard.plugin(plugin_id)
    page = dashboard.page
    # the form comes from the configuration schema: a field that restarts the plugin is marked
    page.get_by_test_id("restart-mark-read_only").wait_for()
    assert page.get_by_label("database_path").get_attribute("type") == "text"
    assert page.get_by_label("max_rows").get_attribute("type") == "number"

    page.get_by_label("database_path").fill(str(db))
    page.get_by_role("button", name="Activate", exact=True).click()
    page.get_by_role("status").filter(has_text="Activated").wait_for()
    heading = page.get_by_role("heading", level=1)
    heading.locator("[data-health=healthy]").wait_for()

    invocations = 3
    durations: list[float] = []
    page.get_by_label("Operation").select_option("query")
    page.get_by_label("Arguments (JSON)").fill('{"sql": "select model, auc from runs"}')
    for _ in range(invocations):
        with page.expect_response(lambda r: r.url.endswith("/invoke")) as answer:
            page.get_by_role("button", name="Invoke", exact=True).click()
        assert answer.value.status == 200, answer.value.text()
        durations.append(answer.value.json()["data"]["duration_ms"])
        page.get_by_role("status").filter(has_text="Invoked query").wait_for()
    assert "xgb" in page.get_by_test_id("invoke-result").inner_text()

    after = api_figures(dashboard.server, plugin_id)["execution_count"]
    assert after - before == invocations
    count = page.get_by_test_id("execution-count")
    page.wait_for_function(
        "n => document.querySelector('[data-testid=execution-count]').textContent === String(n)",
        arg=after,
    )
    assert count.inner_text() == str(after)
    # the chart's series (its figures table) counts the same invocations
    chart = page.get_by_test_id("chart-executions")
    assert chart.locator("canvas").count() >= 1
    cells = chart.locator("td[data-series=executions]").all_text_contents()
    assert sum(int(c or 0) for c in cells) == after
    # the latency chart draws each minute's p50/p95/p99 as the API gives them, and they are
    # the quantiles of these invocations (the service's own measure of each)
    shown = latency_rows(page.get_by_test_id("chart-latency"))
    points = api_points(dashboard.server, plugin_id)
    called = {p["timestamp"]: p for p in points if p["execution_count"]}
    assert set(shown) == set(called), (shown, called)
    for at, p in called.items():
        assert shown[at] == pytest.approx(
            [p["p50_execution_time_ms"], p["p95_execution_time_ms"], p["p99_execution_time_ms"]]
        ), at
    if before == 0:  # only these calls: every quantile is one of their durations, within 1%
        for values in shown.values():
            assert values[0] <= values[1] <= values[2]
            assert all(min(durations) * 0.99 <= v <= max(durations) * 1.01 for v in values)
    dashboard.shot("plugin")

    # the catalogue's dot turned green too
    page.goto(f"{dashboard.server.url}/ui/#/")
    page.locator(f"tr[data-plugin-id={plugin_id}] [data-health=healthy]").wait_for()
    dashboard.shot("catalogue")


def test_a_second_experiment_tracker_is_refused_with_the_conflict_explained(
    dashboard: Dashboard,
) -> None:
    server = dashboard.server
    page = dashboard.page
    with server.client() as c:
        first = register(c, "ui_tracker_one", type="experiment_tracker")
        second = register(c, "ui_tracker_two", type="experiment_tracker")
        dashboard.sign_in(server.admin_token)
        # the trackers are on the first page of their type, whatever the tests before
        # registered (the catalogue's first page is 20 plugins in creation order)
        page.get_by_label("Type").select_option("experiment_tracker")
        row = page.locator(f"tr[data-plugin-id={first}]")
        row.wait_for()
        assert row.locator("[data-health=unknown]").count() == 1
        r = c.post(f"/v1/plugins/{first}/activate", json={})
        assert r.status_code == 200, r.text
        # the catalogue follows without a reload: badge and dot
        url = page.url
        row.locator(".badge-active").wait_for()
        row.locator("[data-health=healthy]").wait_for()
        assert page.url == url
        expected = c.post(f"/v1/plugins/{second}/activate", json={}).json()  # refused
    assert expected["success"] is False and expected["error"]["code"] == "PLUGIN_CONFLICT"
    dashboard.plugin(second)
    page = dashboard.page
    page.get_by_role("button", name="Activate", exact=True).click()
    error = page.get_by_test_id("api-error")
    error.wait_for()
    assert error.get_attribute("data-code") == "PLUGIN_CONFLICT"
    assert "ui_tracker_one" in error.inner_text()
    options = page.get_by_test_id("resolution-options").locator("li").all_inner_texts()
    assert options == [str(o) for o in expected["error"]["details"]["resolution_options"]]
    dashboard.shot("conflict")
    with server.client() as c:
        assert c.get(f"/v1/plugins/{second}").json()["data"]["status"] == "registered"
        assert c.post(f"/v1/plugins/{first}/deactivate", json={}).status_code == 200


def test_a_read_token_cannot_press_a_write_button(dashboard: Dashboard) -> None:
    dashboard.sign_in(dashboard.server.token("plugins:read", subject="viewer"))
    dashboard.plugin("plugin_sqlite_source_001")
    page = dashboard.page
    page.get_by_test_id("read-only-reason").wait_for()
    for name in ("Activate", "Deactivate", "Save configuration", "Invoke"):
        button = page.get_by_role("button", name=name, exact=True)
        assert button.is_disabled(), name
        assert "plugins:write" in (button.get_attribute("title") or ""), name
    assert page.get_by_label("database_path").is_disabled()
    # everything is still shown: the metadata, the configuration and the metrics
    page.get_by_test_id("execution-count").wait_for()
    dashboard.shot("read-only")
    # a secret field is a password input, its value never shown
    dashboard.plugin("plugin_local_tracker_001")
    secret = page.get_by_label("signing_key")
    assert secret.get_attribute("type") == "password" and secret.input_value() == ""
    for fragment, name in (("discover", "Run discovery"), ("composition", "Validate composition")):
        page.get_by_role("link", name=fragment.capitalize(), exact=True).click()
        button = page.get_by_role("button", name=name, exact=True)
        button.wait_for()
        assert button.is_disabled(), name
        assert "plugins:write" in (button.get_attribute("title") or ""), name


def test_an_invalid_or_expired_token_returns_to_sign_in_with_the_apis_message(
    dashboard: Dashboard,
) -> None:
    server = dashboard.server
    page = dashboard.page
    for token in ("not-a-token", server.token("plugins:read", subject="old", ttl=-60)):
        with server.client(token=token) as c:
            expected = c.get("/v1/plugins", params={"limit": 1}).json()["error"]["message"]
        dashboard.sign_in(token, valid=False)
        message = page.get_by_test_id("signin-message")
        message.wait_for()
        assert message.inner_text() == expected
        assert page.get_by_label("Bearer token").is_visible()

    # a token that expires during the session: the next call brings the form back
    dashboard.sign_in(server.admin_token)
    expired = server.token("plugins:admin", subject="late", ttl=-60)
    page.evaluate("t => sessionStorage.setItem('mlx.token', t)", expired)
    page.get_by_test_id("signin-message").wait_for(timeout=TIMEOUT_MS)
    assert "expired" in page.get_by_test_id("signin-message").inner_text().lower()
    assert page.url.endswith("#/signin")
    assert "mlx.token" not in page.evaluate("() => Object.keys(sessionStorage)")
    dashboard.shot("signed-out")


def test_discover_and_register_with_one_click(
    browser: Any,
    process_server_factory: Any,
    documented_paths: list[re.Pattern[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a service whose MLX_PLUGIN_PATH holds a plugin folder (its mlx-plugin.toml)."""
    server = process_server_factory(plugin_path=str(FIXTURE_PLUGINS))
    d = Dashboard(browser, server, tmp_path_factory.getbasetemp() / "screenshots")
    d.shots.mkdir(exist_ok=True)
    try:
        d.sign_in(server.admin_token)
        page = d.page
        page.get_by_role("link", name="Discover", exact=True).click()
        page.get_by_label("git").uncheck()
        with page.expect_response(lambda r: "/v1/plugins/discover" in r.url) as answer:
            page.get_by_role("button", name="Run discovery").click()
        found = answer.value.json()["data"]
        row = page.locator("tr[data-discovered=toml_declared]")
        row.wait_for()
        assert page.locator("tr[data-discovered]").count() == len(found["discovered_plugins"])
        # the example plugins are there, already registered, with a link to them
        page.locator("tr[data-discovered=sqlite_source] a").wait_for()
        with page.expect_response(lambda r: r.url.endswith("/v1/plugins")) as registered:
            row.get_by_role("button", name="Register toml_declared").click()
        assert registered.value.status == 201, registered.value.text()
        plugin_id = registered.value.json()["data"]["id"]
        row.get_by_role("link", name=f"registered as {plugin_id}").wait_for()
        d.shot("discover")
        with server.client() as c:
            assert c.get(f"/v1/plugins/{plugin_id}").json()["data"]["name"] == "toml_declared"
        d.check_requests(documented_paths)
    finally:
        d.close()


def test_discover_with_auto_register_registers_what_it_finds(
    browser: Any,
    process_server_factory: Any,
    documented_paths: list[re.Pattern[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The `auto_register` switch: the discovery registers every compatible, installed plugin
    it finds, and the page shows how many it registered (the answer's summary) and which."""
    server = process_server_factory(plugin_path=str(FIXTURE_PLUGINS))
    d = Dashboard(browser, server, tmp_path_factory.getbasetemp() / "screenshots")
    d.shots.mkdir(exist_ok=True)
    try:
        page = d.page
        # a plugins:write token may discover, not register: the switch says so
        d.sign_in(server.token("plugins:write", subject="writer"))
        page.get_by_role("link", name="Discover", exact=True).click()
        switch = page.get_by_label("auto_register", exact=False)
        assert switch.is_disabled()
        assert "plugins:admin" in (switch.get_attribute("title") or "")
        page.get_by_role("button", name="Sign out").click()

        d.sign_in(server.admin_token)
        page.get_by_role("link", name="Discover", exact=True).click()
        page.get_by_label("git").uncheck()
        switch = page.get_by_label("auto_register", exact=False)
        assert not switch.is_checked()
        switch.check()
        with page.expect_response(lambda r: "/v1/plugins/discover" in r.url) as answer:
            page.get_by_role("button", name="Run discovery").click()
        assert "auto_register=true" in answer.value.url
        found = answer.value.json()["data"]
        registered_now = [p for p in found["discovered_plugins"] if p["auto_registered"]]
        assert "toml_declared" in [p["name"] for p in registered_now]
        assert found["discovery_summary"]["auto_registered"] == len(registered_now)
        count = page.get_by_test_id("auto-registered")
        count.wait_for()
        assert count.inner_text() == str(len(registered_now))
        row = page.locator("tr[data-discovered=toml_declared]")
        assert row.get_by_test_id("auto-registered-mark").count() == 1
        plugin_id = next(p["plugin_id"] for p in registered_now if p["name"] == "toml_declared")
        row.get_by_role("link", name=f"registered as {plugin_id}").wait_for()
        # the plugins already registered before are not marked
        assert (
            page.locator(
                "tr[data-discovered=sqlite_source] [data-testid=auto-registered-mark]"
            ).count()
            == 0
        )
        d.shot("discover-auto-register")
        with server.client() as c:
            assert c.get(f"/v1/plugins/{plugin_id}").json()["data"]["name"] == "toml_declared"

        # a second run finds it registered already: nothing registered now
        with page.expect_response(lambda r: "/v1/plugins/discover" in r.url) as again:
            page.get_by_role("button", name="Run discovery").click()
        assert again.value.json()["data"]["discovery_summary"]["auto_registered"] == 0
        page.wait_for_function(
            "() => document.querySelector('[data-testid=auto-registered]').textContent === '0'"
        )
        d.check_requests(documented_paths)
    finally:
        d.close()


def test_composition_shows_conflicts_and_synergies_as_the_api_explains_them(
    dashboard: Dashboard,
) -> None:
    server = dashboard.server
    with server.client() as c:
        register(c, "ui_comp_tracker", type="experiment_tracker")
        expected = c.post(
            "/v1/plugins/validate-composition",
            json={"plugins": [{"name": "local_tracker"}, {"name": "ui_comp_tracker"}]},
        ).json()["data"]
    assert expected["composition_valid"] is False
    dashboard.sign_in(server.admin_token)
    page = dashboard.page
    page.get_by_role("link", name="Composition", exact=True).click()
    add = dashboard.add_to_composition
    add("sqlite_source")
    add("tabular_folder")
    page.get_by_label("version of sqlite_source").select_option("1.0.0")
    page.get_by_role("button", name="Validate composition").click()
    page.locator("[data-testid=composition-valid][data-valid=true]").wait_for()
    assert page.get_by_test_id("composition-synergy").count() >= 1

    page.get_by_role("button", name="Remove sqlite_source").click()
    page.get_by_role("button", name="Remove tabular_folder").click()
    add("local_tracker")
    add("ui_comp_tracker")
    page.get_by_role("button", name="Validate composition").click()
    page.locator("[data-testid=composition-valid][data-valid=false]").wait_for()
    shown = page.get_by_test_id("composition-conflict")
    assert shown.count() == len(expected["conflicts"])
    for i, conflict in enumerate(expected["conflicts"]):
        text = shown.nth(i).inner_text()
        assert conflict["message"] in text
        for option in conflict["resolution_options"]:
            assert option in text
    dashboard.shot("composition")


def test_composition_finds_and_adds_a_plugin_beyond_the_first_hundred(
    dashboard: Dashboard,
) -> None:
    """The page picks from the whole catalogue through the list API's search: a plugin that
    the first page of 100 (the API's largest) does not hold is found, with both its versions."""
    server = dashboard.server
    with server.client() as c:
        for i in range(100):
            register(c, f"ui_filler_{i:03d}")
        register(c, "ui_far_source", version="1.0.0", description="a source far down the list")
        register(c, "ui_far_source", version="2.0.0", description="a source far down the list")
        first = {p["name"] for p in c.get("/v1/plugins", params={"limit": 100}).json()["data"]}
        assert "ui_far_source" not in first  # what the page used to offer
    dashboard.sign_in(server.admin_token)
    page = dashboard.page
    page.get_by_role("link", name="Composition", exact=True).click()
    page.locator("[data-found]").first.wait_for()
    assert page.locator("[data-found=ui_far_source]").count() == 0
    with page.expect_request(lambda r: "search=far_sou" in r.url) as asked:
        page.get_by_label("Search plugins").fill("far_sou")
    assert "/v1/plugins?" in asked.value.url
    page.locator("[data-testid=found][data-search=far_sou][aria-busy=false]").wait_for()
    found = page.locator("[data-found]")
    assert found.count() == 1
    assert found.first.get_attribute("data-found") == "ui_far_source"
    assert "1.0.0, 2.0.0" in found.first.inner_text()
    page.get_by_role("button", name="Add ui_far_source", exact=True).click()
    page.locator("[data-chosen=ui_far_source]").wait_for()
    assert page.get_by_role("button", name="Add ui_far_source", exact=True).is_disabled()
    versions = page.get_by_label("version of ui_far_source")
    assert versions.locator("option").all_inner_texts() == ["any", "1.0.0", "2.0.0"]
    versions.select_option("2.0.0")
    add = dashboard.add_to_composition
    add("sqlite_source")
    page.get_by_role("button", name="Validate composition").click()
    page.locator("[data-testid=composition-valid][data-valid=true]").wait_for()
    resolved = page.get_by_test_id("composition-result").inner_text()
    assert "ui_far_source 2.0.0" in resolved and "sqlite_source" in resolved


# ---------------------------------------------------------------- behind a path prefix


class _PrefixProxy(BaseHTTPRequestHandler):
    """A reverse proxy serving the service under `/mlx/` only, prefix stripped (nginx's
    `location /mlx/ { proxy_pass http://service/; }`): every method, the bearer token and the
    body passed on, and the answer's Location header as the service wrote it."""

    upstream: str
    seen: list[str]

    def _forward(self) -> None:
        self.seen.append(self.path)
        if not self.path.startswith("/mlx/"):
            self.send_error(404, "outside the proxied prefix")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in ("authorization", "content-type", "accept")
        }
        with http_client(timeout=30, follow_redirects=False) as c:
            r = c.request(
                self.command,
                self.upstream + self.path[len("/mlx") :],
                content=body,
                headers=headers,
            )
        self.send_response(r.status_code)
        for name in ("content-type", "location", "cache-control"):
            if name in r.headers:
                self.send_header(name, r.headers[name])
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prefix_proxy(process_live_server: LiveServer) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type(
        "Proxy", (_PrefixProxy,), {"upstream": process_live_server.url.rstrip("/"), "seen": seen}
    )
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_the_dashboard_works_behind_a_path_prefix(
    browser: Any, process_live_server: LiveServer, prefix_proxy: tuple[str, list[str]]
) -> None:
    base, seen = prefix_proxy
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{base}/mlx/ui")
        page.get_by_label("Bearer token").fill(process_live_server.admin_token)
        page.get_by_role("button", name="Sign in").click()
        page.locator("tr[data-plugin-id=plugin_sqlite_source_001]").wait_for()
        page.locator("tr[data-plugin-id] a").first.click()
        page.get_by_test_id("execution-count").wait_for()
    finally:
        context.close()
    assert any(p.startswith("/mlx/ui/assets/") for p in seen), seen
    assert any(p.startswith("/mlx/v1/plugins/") for p in seen), seen
    assert [p for p in seen if not p.startswith("/mlx/")] == []
