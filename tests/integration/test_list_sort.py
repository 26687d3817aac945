"""The plugin list's orders (issue 15, `GET /v1/plugins?sort=`, storage/listing.py): every
order, forwards and backwards, with every filter, holds on every page the rows an ORDER BY
over the whole table gives, ties broken by id; deep pages are found by the order's own
index; the count is the filter's whatever the order; on a real SQLite file and a real
PostgreSQL database each, through the storage and through the API and the SDK."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from mlx_platform import AsyncMLXClient, MLXClient
from mlx_platform.storage import Database, listing
from mlx_platform.storage.listing import Listed, Memo, PluginFilter, list_plugins
from tests.conftest import assert_error, clean_env, forked_mlx
from tests.integration._list_helpers import (
    DATABASES,
    T0,
    Plugin,
    creation_times,
    downgrade,
    empty_database,
    insert,
    migrate,
    watch_statements,
)

SORTS = listing.SORTS
# sort -> the ORDER BY of the whole table it must agree with, ascending
ORDER_BY = {"created_at": "created_at, id", "name": "name, id", "type": "type, name, id"}
TYPES = ("data_source", "data_sink", "feature_store")
STATUSES = ("registered", "inactive", "error", "registered", "inactive")
CATEGORIES = (None, "database", "files", "database")
# names: several plugins share one (one per version), upper case, punctuation
NAMES = ("beta", "alpha", "Alpha", "alpha-2", "a.b", "a_b", "zeta", "beta", "Zeta", "alpha")


def order_by(sort: str) -> str:
    columns = ORDER_BY[sort.removeprefix("-")]
    if sort.startswith("-"):
        columns = ", ".join(f"{c} DESC" for c in columns.split(", "))
    return columns


def sortable(n: int) -> list[Plugin]:
    """`n` plugins whose ids follow neither their names nor their creation: names repeat
    (versions), every fourth shares the creation time of the one before it, types, statuses
    and categories mixed."""
    out = []
    for i, when in enumerate(creation_times(n)):
        name = NAMES[(i * 7) % len(NAMES)] + ("" if i % 3 else f"-{i % 5}")
        out.append(
            Plugin(
                id=f"plugin_s{(i * 37) % 101:03d}_{i:03d}",
                name=name,
                description=f"{name} 1.0.{i}",
                version=f"1.0.{i}",
                type=TYPES[(i * 5) % len(TYPES)],
                status=STATUSES[i % len(STATUSES)],
                category=CATEGORIES[i % len(CATEGORIES)],
                created_at=when,
            )
        )
    return out


class Lister:
    """storage/listing.py's list on its own session, each call one read (`memo`: the
    process's, or None: everything found anew)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)

    def __call__(
        self,
        *,
        page: int = 1,
        limit: int = 100,
        sort: str | None = None,
        memo: Memo | None = listing.MEMO,
        **flt: Any,
    ) -> Listed:
        with self.db.read() as session:
            return list_plugins(
                session, PluginFilter(**flt), page=page, limit=limit, sort=sort, memo=memo
            )

    def walk(self, limit: int = 7, **kw: Any) -> list[str]:
        """Every page in turn, as a client walks them (a walk longer than the table fails)."""
        out: list[str] = []
        for page in range(1, 200 // limit + 2):
            found = self(page=page, limit=limit, **kw)
            out += [r.id for r in found.rows]
            if not found.has_next:
                return out
        raise AssertionError(f"more pages than plugins: {out[:3]}...")

    def ordered(self, sort: str, where: str = "") -> list[str]:
        """What every page must match: the ORDER BY of the whole table."""
        with self.db.read() as session:
            return list(
                session.scalars(text(f"SELECT id FROM plugins {where} ORDER BY {order_by(sort)}"))
            )


@pytest.fixture(scope="module", params=DATABASES)
def stored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lister]:
    """90 sortable plugins in a database of their own, shared by the tests that only read."""
    with empty_database(request.param, tmp_path_factory.mktemp("sort")) as url:
        migrate(url)
        insert(url, sortable(90))
        lst = Lister(url)
        try:
            yield lst
        finally:
            lst.db.dispose()


@pytest.fixture
def fresh(stored: Lister) -> Iterator[Lister]:
    """A lister of its own (its own engine, whose statements a test may watch) on `stored`."""
    lst = Lister(stored.url)
    yield lst
    lst.db.dispose()


FILTERS = [
    ({}, ""),
    ({"type": "data_sink"}, "WHERE type = 'data_sink'"),
    ({"status": "inactive"}, "WHERE status = 'inactive'"),
    ({"category": "database"}, "WHERE category = 'database'"),
    (
        {"type": "data_source", "status": "registered"},
        "WHERE type = 'data_source' AND status = 'registered'",
    ),
]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize(("flt", "where"), FILTERS, ids=lambda v: str(v) if v else "all")
def test_every_page_holds_the_rows_the_order_by_gives(
    stored: Lister, sort: str, flt: dict[str, str], where: str
) -> None:
    want = stored.ordered(sort, where)
    assert len(want) > 10
    assert stored.walk(limit=7, sort=sort, **flt) == want
    assert stored.walk(limit=4, sort=sort, memo=None, **flt) == want  # each deep page walked
    for limit in (1, 7, 25):
        pages = math.ceil(len(want) / limit)
        for page in sorted({1, 2, pages // 2, pages - 1, pages, pages + 1} - {0}):
            found = stored(page=page, limit=limit, sort=sort, **flt)
            assert [r.id for r in found.rows] == want[(page - 1) * limit : page * limit], page
            assert found.has_next == (page * limit < len(want))
            assert (found.total, found.total_is_estimate) == (len(want), False)


def test_plugins_of_one_name_are_ordered_by_id_and_reversed_with_it(stored: Lister) -> None:
    by_name = [(r.name, r.id) for r in stored(sort="name").rows]
    assert by_name == sorted(by_name)
    shared = [n for n in {n for n, _ in by_name} if sum(1 for m, _ in by_name if m == n) > 2]
    assert shared  # several plugins of one name, whose ids are not in creation order
    descending = [(r.name, r.id) for r in stored(sort="-name").rows]
    assert descending == list(reversed(by_name))
    assert stored.walk(limit=5, sort="-type") == list(reversed(stored.walk(limit=5, sort="type")))
    by_type = [(r.type, r.name, r.id) for r in stored(sort="type").rows]
    assert by_type == sorted(by_type)


def test_the_default_order_is_creation_time(stored: Lister) -> None:
    assert stored.walk(limit=9) == stored.walk(limit=9, sort="created_at")
    assert stored.walk(limit=9) == stored.ordered("created_at")


def test_an_order_reads_no_first_row_another_order_found(stored: Lister) -> None:
    """Deep pages of one filter in two orders: each walks to its own first row (kept by
    order), though both share the filter's count."""
    for sort in ("created_at", "name", "-name", "type", "-created_at"):
        assert [r.id for r in stored(page=5, limit=6, sort=sort).rows] == stored.ordered(sort)[
            24:30
        ], sort


def test_a_search_takes_no_sort_and_an_unknown_sort_is_refused(stored: Lister) -> None:
    with pytest.raises(ValueError, match="ranked"):
        stored(search="alpha", sort="name")
    with pytest.raises(ValueError, match="created_at, -created_at, name"):
        stored(sort="version")
    assert stored(search="alpha").total > 0  # a search without sort: ranked, as before


def test_the_count_is_the_filters_whatever_the_order(fresh: Lister) -> None:
    """A count kept for a filter serves every order of it: a first page in another order is
    not counted again; on PostgreSQL it is the page's statement alone (which reads the list
    version the count is kept by)."""
    for flt in ({}, {"type": "data_sink"}, {"category": "files"}):
        first = fresh(limit=3, **flt)
        assert first.has_next and not first.total_is_estimate
        for sort in SORTS:
            seen = watch_statements(fresh.db.engine)
            again = fresh(limit=3, sort=sort, **flt)
            assert again.total == first.total, (flt, sort)
            assert not [s for s in seen if "count(" in s.lower()], (flt, sort, seen)
            if fresh.db.dialect == "postgresql":
                assert len(seen) == 1 and "list_epoch" in seen[0], (flt, sort, seen)
            seen.clear()


def test_active_and_error_sort_as_the_api_shows_them(stored: Lister) -> None:
    """status=error with live replicas: an active plugin no live replica runs is listed (and
    sorted) among the errors, deep pages too; nothing is active then."""
    later = T0 + timedelta(days=1)  # no replica heartbeat since: nothing runs
    engine = create_engine(stored.url)
    try:
        with engine.connect() as conn, Session(bind=conn) as session:
            # a few plugins made active, in a transaction rolled back
            conn.execute(text("UPDATE plugins SET status = 'active' WHERE id LIKE 'plugin_s01%'"))
            want = list(
                session.scalars(
                    text(
                        "SELECT id FROM plugins WHERE status IN ('error', 'active') "
                        "ORDER BY name DESC, id DESC"
                    )
                )
            )
            got = [
                r.id
                for page in range(1, 12)
                for r in list_plugins(
                    session,
                    PluginFilter(status="error"),
                    page=page,
                    limit=3,
                    sort="-name",
                    live_since=later,
                ).rows
            ]
            active = list_plugins(
                session,
                PluginFilter(status="active"),
                page=1,
                limit=5,
                sort="name",
                live_since=later,
            )
            conn.rollback()
    finally:
        engine.dispose()
    assert 18 < len(want) < 33 and got == want
    assert active.rows == [] and active.total == 0


# ---------------------------------------------------------------------------- the indexes


FILTER_COLUMNS = (None, "type", "status", "category")


def index_columns(url: str) -> list[list[str]]:
    engine = create_engine(url)
    try:
        return [list(i["column_names"]) for i in inspect(engine).get_indexes("plugins")]
    finally:
        engine.dispose()


def indexed(columns: list[list[str]], sort: str, filter_column: str | None) -> bool:
    """Whether an index holds a filter's rows in the order (a type filter's rows in type
    order are in name order)."""
    order = ORDER_BY[sort.removeprefix("-")].split(", ")
    want = order if filter_column is None else [filter_column, *order]
    if filter_column is not None and order[0] == filter_column:
        want = order
    return any(c[: len(want)] == want for c in columns)


@pytest.mark.parametrize("kind", DATABASES)
def test_upgrade_from_0004_indexes_each_order_of_the_plugins_already_stored(
    kind: str, tmp_path: Path
) -> None:
    with empty_database(kind, tmp_path) as url:
        migrate(url, "0004")
        before = index_columns(url)
        assert not indexed(before, "name", None)
        plugins = sortable(40)
        insert(url, list(reversed(plugins)))  # stored out of every order
        migrate(url)
        after = index_columns(url)
        for sort in SORTS:
            for column in FILTER_COLUMNS:
                assert indexed(after, sort, column), (sort, column, after)
        lst = Lister(url)
        try:
            for sort in SORTS:
                assert lst.walk(limit=6, sort=sort) == lst.ordered(sort), sort
                assert lst.walk(limit=6, sort=sort, status="inactive") == lst.ordered(
                    sort, "WHERE status = 'inactive'"
                ), sort
        finally:
            lst.db.dispose()
        downgrade(url, "0004")
        assert sorted(index_columns(url)) == sorted(before)


# ---------------------------------------------------------------------------- the API


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database holding 45 sortable plugins (set up before, and dropped after,
    the servers of a test that asks for it first)."""
    with empty_database(request.param, tmp_path) as url:
        migrate(url)
        insert(url, sortable(45))
        yield url


def pages_of(client: httpx.Client, limit: int, **params: Any) -> list[str]:
    """Every page in turn through the API (a walk longer than the table fails)."""
    ids: list[str] = []
    for page in range(1, 100 // limit + 2):
        r = client.get("/v1/plugins", params={**params, "limit": limit, "page": page})
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [p["id"] for p in body["data"]]
        if not body["pagination"]["has_next"]:
            return ids
    raise AssertionError(f"more pages than plugins: {ids[:3]}...")


def test_the_api_and_both_sdks_page_through_every_order(
    database_url: str, process_server_factory: Any
) -> None:
    srv = process_server_factory(database_url=database_url, seed_builtin_plugins="false")
    lst = Lister(database_url)
    try:
        with srv.client() as c:
            for sort in SORTS:
                assert pages_of(c, 7, sort=sort) == lst.ordered(sort), sort
            assert pages_of(c, 4, sort="-name", type="data_sink") == lst.ordered(
                "-name", "WHERE type = 'data_sink'"
            )
            deep = c.get("/v1/plugins", params={"sort": "type", "limit": 6, "page": 7}).json()
            assert [p["id"] for p in deep["data"]] == lst.ordered("type")[36:42]
            # the spec's parameters alone: creation order, as before
            assert pages_of(c, 9) == lst.ordered("created_at")

        token = srv.admin_token
        with MLXClient(api_token=token, base_url=srv.url) as client:
            first = client.plugins.list(sort="-type", limit=6)
            assert [p.id for p in first.data] == lst.ordered("-type")[:6]
            assert [p.id for p in islice(first, 100)] == lst.ordered("-type")  # every page
            later = client.plugins.list(sort="name", page=3, limit=5)
            assert [p.id for p in islice(later, 100)] == lst.ordered("name")[10:]

        async def walk() -> list[str]:
            async with AsyncMLXClient(api_token=token, base_url=srv.url) as client:
                page = await client.plugins.list(sort="name", limit=6, status="inactive")
                ids = []
                async for p in page:
                    ids.append(p.id)
                    assert len(ids) <= 100, "more plugins than stored"
                return ids

        assert asyncio.run(walk()) == lst.ordered("name", "WHERE status = 'inactive'")

        # the command line: `mlx plugins list --sort`, every page
        env = clean_env(MLX_API_URL=srv.url, MLX_API_TOKEN=token, COLUMNS="200")
        for args in (["--sort", "-name"], ["--sort=-name"]):
            proc = forked_mlx(["plugins", "list", *args, "--limit", "8", "--all", "--json"], env)
            assert proc.returncode == 0, proc.stderr
            assert [p["id"] for p in json.loads(proc.stdout)["data"]] == lst.ordered("-name")
        proc = forked_mlx(["plugins", "list", "--sort", "version"], env)
        assert proc.returncode != 0 and "'sort'" in proc.stderr and "'-type'" in proc.stderr
    finally:
        lst.db.dispose()


def test_an_unknown_sort_is_refused_naming_the_allowed_ones(admin: httpx.Client) -> None:
    err = assert_error(
        admin.get("/v1/plugins", params={"sort": "version"}), 422, "VALIDATION_ERROR"
    )
    assert set(err["details"]) == {"sort"}, err
    reason = err["details"]["sort"]
    assert all(f"'{s}'" in reason for s in SORTS), reason
    assert "sort" in err["message"]
    err = assert_error(admin.get("/v1/plugins", params={"sort": "name "}), 422, "VALIDATION_ERROR")
    assert set(err["details"]) == {"sort"}


def test_a_search_with_a_sort_is_refused_saying_why(admin: httpx.Client) -> None:
    for sort in ("name", "created_at"):
        r = admin.get("/v1/plugins", params={"search": "plugin", "sort": sort})
        err = assert_error(r, 422, "VALIDATION_ERROR")
        assert err["details"] == {
            "sort": "cannot be combined with search: search results are ranked"
        }
        assert "ranked" in str(err["message"])
    assert admin.get("/v1/plugins", params={"search": "plugin"}).status_code == 200


def test_the_openapi_documents_each_order(admin: httpx.Client) -> None:
    spec = admin.get("/openapi.json").json()
    operation = spec["paths"]["/v1/plugins"]["get"]
    (sort,) = [p for p in operation["parameters"] if p["name"] == "sort"]
    assert sort["in"] == "query" and not sort.get("required")
    schema = sort["schema"]
    values = schema.get("enum") or next(s["enum"] for s in schema["anyOf"] if "enum" in s)
    assert sorted(values) == sorted(SORTS)
    for value in SORTS:
        assert f"`{value}`" in operation["description"], value
    # the spec's parameters are all still there
    names = {p["name"] for p in operation["parameters"]}
    assert {"type", "status", "category", "page", "limit", "search"} <= names
