"""The dashboard (/ui) at catalogue scale (issue 15): `mlx serve` on a SQLite database holding
100,000 plugins (bench/_seed.py), the page in headless Chromium (Debian's `chromium`, driven
by Playwright as tests/e2e/test_dashboard.py does), signed in through its form with the admin
token. Each figure is the median of MLX_BENCH_UI_ROUNDS (10) rounds after one unmeasured one,
timed from the action until the catalogue's rows change to a full page; those rows must then
be exactly the plugins the API has for that query (fast and wrong would not count). The ids
are asked of the API after the page has shown them, not before: the service keeps a query's
count once found (storage/listing.py), and the page's query is to be its first.

- first page: a navigation to /ui/#/ (from about:blank; the built files come from the
  browser's cache after the first round, as they do for an operator) until page 1 is shown.
  Baseline: the same navigation on a service whose database holds only the three example
  plugins, in the same run (what the 100,000 plugins cost the page).
- next page: a click on "Next page" until the next page is shown, walking pages 2, 3...
- search: typing a product name (a different one each round) into the search box until its
  first page of matches is shown. This includes the page's 250 ms debounce: it waits for
  typing to pause before asking the API (it would otherwise ask once per keystroke).
- filter: choosing a type (a different one than the round before) until its first page is
  shown.
  Baseline of the three: the API call alone (GET /v1/plugins, keep-alive httpx client),
  median over as many queries of the same kind, each asked for the first time as the page's
  were: the pages after the page's last, the next product names; for the filter the same
  types (three values: after its first rounds the page's count was kept too).

Targets: a person reads an answer within a second as immediate for a navigation (1000 ms for
the first page, which loads the page itself, its scripts, and the list); an action on a page
already shown should answer in half that (500 ms for the next page, a search, a filter; for a
search, half of it is the debounce). Every measured action is made 1.2 s after the one before,
so the service's read cache (server/read_cache.py, answers kept 1 s) never answers it: each is
read from the database, as the API baseline's requests are (`Cache-Control: no-cache`).

Settings (environment): MLX_BENCH_UI_ROUNDS (10), MLX_BENCH_UI_PLUGINS (100000), MLX_CHROMIUM
(the browser; default `chromium` on the PATH).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import Failed, Figure, logger

from mlx_platform.testing.service import LiveService, start_service

ROUNDS = int(os.environ.get("MLX_BENCH_UI_ROUNDS", "10"))
PLUGINS = int(os.environ.get("MLX_BENCH_UI_PLUGINS", "100000"))
LIMIT = 20  # the catalogue's page (frontend/src/catalogue.tsx)
GAP_S = 1.2  # between measured actions: longer than the read cache keeps an answer (1 s)
TIMEOUT_MS = 30_000
FRESH = {"Cache-Control": "no-cache"}
# the types the catalogue's filter offers that the seeded catalogue has (it has no ml_platform)
FILTER_TYPES = ("data_source", "feature_store", "experiment_tracker")
SHOWN = "() => [...document.querySelectorAll('tr[data-plugin-id]')].map(r => r.dataset.pluginId)"
# the rows shown are a full page other than `before`
CHANGED = """([before, n]) => {
  const shown = [...document.querySelectorAll('tr[data-plugin-id]')].map(r => r.dataset.pluginId);
  return shown.length === n && shown.join() !== before.join();
}"""
API = "(GET /v1/plugins alone: the API, httpx, no-cache)"


_log = logger("bench_ui")


@dataclass
class Results:
    """Medians in ms, (the page's, its baseline's); a missing entry failed (said on stderr)."""

    measured: dict[str, tuple[float, float | None]] = field(default_factory=dict)


def chromium() -> str:
    path = os.environ.get("MLX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        raise Failed(f"no Chromium at {path}: `sudo apt-get install -y chromium`")
    return path


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium(),
            headless=True,
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            yield b
        finally:
            b.close()


@contextmanager
def service(home: Path, database_url: str, *, examples: bool) -> Iterator[LiveService]:
    svc = start_service(
        home,
        settings={
            "database_url": database_url,
            "seed_builtin_plugins": "true" if examples else "false",
        },
        timeout=120,
    )
    try:
        yield svc
    finally:
        svc.stop()


class Catalogue:
    """One browser page on a service's /ui, signed in through the form; the API beside it."""

    def __init__(self, b: Any, svc: LiveService) -> None:
        self.url = svc.url
        self.api = httpx.Client(
            base_url=svc.url, headers={"Authorization": f"Bearer {svc.token}"}, timeout=60
        )
        self.context = b.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.page.goto(f"{self.url}/ui")
        self.page.get_by_label("Bearer token").fill(svc.token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("tr[data-plugin-id]").first.wait_for()

    def close(self) -> None:
        self.context.close()
        self.api.close()

    def ids(self, **params: Any) -> list[str]:
        """The ids of the API's page for `params` (what the page must show)."""
        r = self.api.get("/v1/plugins", params={"limit": LIMIT, **params}, headers=FRESH)
        if r.status_code != 200:
            raise Failed(f"GET /v1/plugins {params} answered {r.status_code}: {r.text[:300]}")
        ids = [p["id"] for p in r.json()["data"]]
        if not ids:
            raise Failed(f"GET /v1/plugins {params} found nothing: nothing to see shown")
        return ids

    def api_ms(self, **params: Any) -> float:
        t0 = time.perf_counter()
        r = self.api.get("/v1/plugins", params={"limit": LIMIT, **params}, headers=FRESH)
        elapsed = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise Failed(f"GET /v1/plugins {params} answered {r.status_code}")
        return elapsed

    def shown(self) -> list[str]:
        return list(self.page.evaluate(SHOWN))

    def timed(self, action: Callable[[], object], rows: int = LIMIT, **params: Any) -> float:
        """ms from `action` until the rows shown change to a full page (`rows` of them), after
        a pause of GAP_S; Failed unless they are the API's page for `params`."""
        before = self.shown()
        time.sleep(GAP_S)
        t0 = time.perf_counter()
        action()
        self.page.wait_for_function(CHANGED, arg=[before, rows], polling="raf")
        elapsed = (time.perf_counter() - t0) * 1000
        shown, want = self.shown(), self.ids(**params)
        if shown != want:
            raise Failed(f"the page showed {shown[:3]}... where the API has {want[:3]}... {params}")
        return elapsed

    def fresh(self) -> None:
        """The catalogue as a navigation leaves it: page 1, no search, no filter."""
        self.page.goto("about:blank")
        self.page.goto(f"{self.url}/ui/#/")
        self.page.wait_for_function(CHANGED, arg=[[], LIMIT], polling="raf")


def first_page_ms(cat: Catalogue) -> list[float]:
    """Navigations to /ui/#/ until page 1 is shown; the first is not counted."""
    rows = len(cat.ids(page=1))  # 3 on the example plugins' database
    samples = []

    def navigate() -> None:
        cat.page.goto(f"{cat.url}/ui/#/", wait_until="commit")

    for i in range(ROUNDS + 1):
        cat.page.goto("about:blank")
        ms = cat.timed(navigate, rows, page=1)
        if i:
            samples.append(ms)
    return samples


def next_page_ms(cat: Catalogue) -> tuple[list[float], list[float]]:
    """Clicks on "Next page" from page 1 on; the API's time for each page asked."""
    cat.fresh()
    nxt = cat.page.get_by_role("button", name="Next page")
    samples, api = [], []
    for i in range(ROUNDS + 1):
        ms = cat.timed(nxt.click, page=i + 2)
        if i:
            samples.append(ms)
    for page in range(ROUNDS + 3, 2 * ROUNDS + 3):  # pages the page did not ask for
        time.sleep(GAP_S)
        api.append(cat.api_ms(page=page))
    return samples, api


def search_ms(cat: Catalogue) -> tuple[list[float], list[float]]:
    """A product name typed into the search box (a different one each round)."""
    import _seed

    products = list(_seed.PRODUCTS)
    terms, others = products[: ROUNDS + 1], products[ROUNDS + 1 : 2 * ROUNDS + 1]
    cat.fresh()
    box = cat.page.get_by_label("Search")
    samples, api = [], []
    for i, term in enumerate(terms):
        ms = cat.timed(lambda term=term: box.fill(term), search=term)
        if i:
            samples.append(ms)
    for term in others:  # terms the page did not ask for
        time.sleep(GAP_S)
        api.append(cat.api_ms(search=term))
    _log(f"the page searched for {', '.join(terms[1:])}; the API for {', '.join(others)}")
    return samples, api


def filter_ms(cat: Catalogue) -> tuple[list[float], list[float]]:
    """A type chosen in the Type filter, another than the round before."""
    cat.fresh()
    choose = cat.page.get_by_label("Type")
    samples, api = [], []
    for i in range(ROUNDS + 1):
        t = FILTER_TYPES[i % len(FILTER_TYPES)]
        ms = cat.timed(lambda t=t: choose.select_option(t), type=t)
        if i:
            samples.append(ms)
            time.sleep(GAP_S)
            api.append(cat.api_ms(type=t))
    return samples, api


def _fmt(samples: list[float]) -> str:
    return ", ".join(f"{s:.0f}" for s in samples)


def _step(what: str, func: Callable[[], None]) -> None:
    try:
        func()
    except Exception as exc:  # noqa: BLE001 - said, and the figure shows MISSED
        detail = str(exc) if isinstance(exc, Failed) else traceback.format_exc()
        _log(f"{what} failed; its figures are reported as MISSED:\n{detail}")


def measure(r: Results, tmp: Path) -> None:
    import _seed

    small_url = f"sqlite:///{tmp / 'examples.db'}"
    full_url = f"sqlite:///{tmp / 'full.db'}"
    seeded = _seed.seed(full_url, PLUGINS)
    _log(f"{seeded.rows} plugins stored in {seeded.seconds:.1f} s")
    with browser() as b:
        baseline: list[float] = []

        def on_examples() -> None:
            with service(tmp / "home-examples", small_url, examples=True) as svc:
                cat = Catalogue(b, svc)
                try:
                    baseline.extend(first_page_ms(cat))
                finally:
                    cat.close()
            _log(f"first page, the example plugins only: {_fmt(baseline)} ms")

        _step("first page on the example plugins", on_examples)

        with service(tmp / "home-100k", full_url, examples=False) as svc:
            cat = Catalogue(b, svc)
            try:

                def first() -> None:
                    samples = first_page_ms(cat)
                    _log(f"first page, {PLUGINS} plugins: {_fmt(samples)} ms")
                    r.measured["first_page"] = (
                        statistics.median(samples),
                        statistics.median(baseline) if baseline else None,
                    )

                _step("first page", first)
                for name, how in (
                    ("next_page", next_page_ms),
                    ("search", search_ms),
                    ("filter", filter_ms),
                ):

                    def one(name: str = name, how: Any = how) -> None:
                        samples, api = how(cat)
                        _log(f"{name}: {_fmt(samples)} ms; the API alone {_fmt(api)} ms")
                        r.measured[name] = (statistics.median(samples), statistics.median(api))

                    _step(name, one)
            finally:
                cat.close()


TARGETS = {  # figure -> (target ms, baseline's name)
    "first_page": (1000.0, "(the same navigation, the 3 example plugins only)"),
    "next_page": (500.0, API),
    "search": (500.0, API + "; the page waits 250 ms for typing to pause"),
    "filter": (500.0, API),
}


def figures_for(r: Results) -> list[Figure]:
    out = []
    for name, (target, baseline_name) in TARGETS.items():
        got = r.measured.get(name)
        out.append(
            Figure(
                f"ui_{name}_100k",
                got[0] if got else math.inf,
                "ms",
                target,
                got[1] if got else None,
                baseline_name,
            )
        )
    return out


def run() -> list[Figure]:
    r = Results()
    tmp = Path(tempfile.mkdtemp(prefix="mlxbench_ui_"))
    t0 = time.perf_counter()
    try:
        _step("the dashboard at 100k", lambda: measure(r, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"{time.perf_counter() - t0:.0f} s")
    return figures_for(r)


if __name__ == "__main__":
    for f in run():
        print(f.line())
