"""The plugin list at catalogue scale (issue 13, storage/listing.py): ranked search from the
search index, deep pages by a keyset seek, totals exact up to a bound, on a real SQLite file
and a real PostgreSQL database each (the same expectations for both), and the migration that
builds the index for a database already holding plugins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, text, update

from mlx_platform.storage import Database, PluginRow, listing
from mlx_platform.storage.listing import TOTAL_BOUND
from mlx_platform.storage.repositories import PluginFilter, PluginRepository
from tests.conftest import on_postgres, postgres_url_for
from tests.integration._list_helpers import (
    DATABASES,
    T0,
    Plugin,
    creation_times,
    empty_database,
    insert,
    migrate,
    watch_statements,
)


@pytest.fixture(params=DATABASES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, not migrated, dropped after the test."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db_url(empty_url: str) -> str:
    migrate(empty_url)
    return empty_url


class Lister:
    """PluginRepository.list on its own session, each call one read."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)

    def __call__(self, *, page: int = 1, limit: int = 100, bound: int | None = None, **flt: Any):
        with self.db.read() as session:
            return PluginRepository(session).list(
                PluginFilter(**flt), page=page, limit=limit, bound=bound
            )

    def ids(self, **kw: Any) -> list[str]:
        return [r.id for r in self(**kw).rows]

    def every_id(self, limit: int = 7, **flt: Any) -> list[str]:
        """Every page in turn, as a client walks them."""
        out: list[str] = []
        page = 1
        while True:
            found = self(page=page, limit=limit, **flt)
            out += [r.id for r in found.rows]
            if not found.has_next:
                return out
            page += 1

    def offset_ids(self, sql_filter: str = "", **params: Any) -> list[str]:
        """The list's order as an OFFSET query has it: what every page must match."""
        with self.db.read() as session:
            return list(
                session.scalars(
                    text(f"SELECT id FROM plugins {sql_filter} ORDER BY created_at, id"), params
                )
            )


@pytest.fixture
def lister(db_url: str) -> Iterator[Lister]:
    lst = Lister(db_url)
    yield lst
    lst.db.dispose()


def catalogue(n: int) -> list[Plugin]:
    """`n` plugins in creation order, every fourth sharing the creation time of the one before
    it (ties broken by id), types and statuses mixed."""
    return [
        Plugin(
            id=f"plugin_p{(i * 37) % 101:03d}_{i:03d}",  # ids not in creation order
            name=f"p{i:03d}",
            description=f"plugin number {i}",
            type=("data_source", "data_sink", "feature_store")[i % 3],
            status=("registered", "inactive", "error", "registered")[i % 4],
            created_at=when,
        )
        for i, when in enumerate(creation_times(n))
    ]


# ---------------------------------------------------------------------------- search


SEARCHABLE = [
    Plugin("plugin_a_001", "warehouse-loader", "Loads rows into a Snowflake warehouse"),
    Plugin("plugin_b_001", "duckdb-reader", "Reads DuckDB files"),
    Plugin("plugin_c_001", "mongo-sink", "Writes documents to MongoDB"),
    Plugin("plugin_d_001", "ÉCLAIR-Tool", "über-fast éclairs"),
    Plugin("plugin_e_001", "percent", "Keeps 100% of the data_lake"),
    Plugin("plugin_f_001", "db", "x"),  # a name of exactly the term
    Plugin("plugin_g_001", "snowflake-writer", "Writes to Snowflake"),
    Plugin("plugin_h_001", "quoted", 'says "hi" to "ME"'),
    Plugin("plugin_i_001", "Loads-Everything", "a warehouse of loaders"),
]


def expected(term: str) -> list[str]:
    """What a search must answer, in order: name matches, then description-only matches,
    each in registration order (here, insertion order)."""
    t = term.lower()
    in_name = [p.id for p in SEARCHABLE if t in p.name.lower()]
    in_description = [
        p.id for p in SEARCHABLE if t in p.description.lower() and p.id not in in_name
    ]
    return in_name + in_description


@pytest.fixture
def searchable(db_url: str) -> Iterator[Lister]:
    insert(
        db_url,
        [
            Plugin(p.id, p.name, p.description, created_at=T0 + timedelta(seconds=i))
            for i, p in enumerate(SEARCHABLE)
        ],
    )
    lst = Lister(db_url)
    yield lst
    lst.db.dispose()


@pytest.mark.parametrize(
    "term",
    [
        "snowflake",  # name of one, description of another: the name match first
        "SNOWFLAKE",
        "warehouse",
        "loads",  # two names, then a description
        "ads ro",  # across a space
        "ouse-lo",
        "db",  # 2 characters: within names and descriptions, a name that is the term
        "DB",
        "ke",
        "o",  # 1 character
        "éc",  # accented letters ignore case too
        "ÜBER",
        "%",
        "0%",
        "_",
        "a_l",
        '"',
        '"me"',
        "zz",
        "nothing like it",
    ],
)
def test_search_is_a_case_insensitive_substring_ranked_by_name_first(
    searchable: Lister, term: str
) -> None:
    found = searchable(search=term)
    assert [r.id for r in found.rows] == expected(term)
    assert (found.total, found.total_is_estimate, found.has_next) == (
        len(expected(term)),
        False,
        False,
    )


def test_search_pages_follow_the_ranking(searchable: Lister) -> None:
    want = expected("o")
    assert len(want) > 5
    assert searchable.every_id(limit=2, search="o") == want
    for limit in (1, 3):
        for page in range(1, len(want) // limit + 3):
            found = searchable(search="o", page=page, limit=limit)
            assert [r.id for r in found.rows] == want[(page - 1) * limit : page * limit]
            assert found.total == len(want) and not found.total_is_estimate


@pytest.mark.parametrize("term", ["db", "o", "ke", "ri", "er"])
def test_search_pages_do_not_depend_on_how_a_group_is_read(
    searchable: Lister, term: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL reads a 2-character group of few plugins from the bigram index and a larger
    one by walking the key: with the threshold at 1, every group of 2 or more is walked."""
    want = expected(term)
    assert searchable.every_id(limit=2, search=term) == want
    monkeypatch.setattr(listing, "_SPARSE", 1)
    listing.MEMO.clear()  # what was found with the other threshold
    for limit in (1, 2, 3):
        assert searchable.every_id(limit=limit, search=term) == want
    assert searchable(search=term).total == len(want)


def test_search_combines_with_filters(db_url: str) -> None:
    plugins = catalogue(40)
    insert(db_url, plugins)
    lst = Lister(db_url)
    # "number 1" within descriptions: 1, 10-19; "p01" within names: p010-p019
    for flt in (
        {"type": "data_sink"},
        {"status": "error"},
        {"status": "inactive", "type": "data_source"},
    ):
        want_names = [
            p.id
            for p in plugins
            if "p01" in p.name and all(getattr(p, k) == v for k, v in flt.items())
        ]
        assert lst.ids(search="p01", **flt) == want_names
        assert lst.every_id(limit=2, search="number 1", **flt) == [
            p.id
            for p in plugins
            if "number 1" in p.description and all(getattr(p, k) == v for k, v in flt.items())
        ]
    lst.db.dispose()


# ---------------------------------------------------------------------------- deep pages


@pytest.mark.parametrize(
    ("flt", "sql"),
    [
        ({}, ""),
        ({"type": "feature_store"}, "WHERE type = 'feature_store'"),
        ({"status": "registered"}, "WHERE status = 'registered'"),
    ],
)
def test_every_page_holds_the_rows_offset_gives(
    lister: Lister, db_url: str, flt: dict[str, str], sql: str
) -> None:
    insert(db_url, catalogue(90))
    ordered = lister.offset_ids(sql)
    assert len(ordered) > 20
    for limit in (1, 7, 25):
        pages = -(-len(ordered) // limit)
        for page in (1, 2, pages // 2, pages - 1, pages, pages + 1):
            found = lister(page=page, limit=limit, **flt)
            assert [r.id for r in found.rows] == ordered[(page - 1) * limit : page * limit]
            assert found.has_next == (page * limit < len(ordered))
            assert (found.total, found.total_is_estimate) == (len(ordered), False)


def test_a_deep_page_of_active_or_error_counts_only_live_replicas(db_url: str) -> None:
    """status=active|error: an active plugin that no live replica runs is shown (and
    filtered) as error, on deep pages too."""
    plugins = [
        Plugin(
            f"plugin_s_{i:03d}",
            f"s{i:03d}",
            "",
            status=("active", "error")[i % 2],
            created_at=T0 + timedelta(seconds=i),
        )
        for i in range(30)
    ]
    insert(db_url, plugins)
    lst = Lister(db_url)
    later = T0 + timedelta(days=1)  # no replica heartbeat since: nothing runs
    with lst.db.read() as session:
        repo = PluginRepository(session)
        errors = [
            r.id
            for page in range(1, 5)
            for r in repo.list(
                PluginFilter(status="error"), page=page, limit=8, live_since=later
            ).rows
        ]
        active = repo.list(PluginFilter(status="active"), page=2, limit=8, live_since=later)
    assert errors == [p.id for p in plugins]
    assert active.rows == [] and active.total == 0 and not active.has_next
    lst.db.dispose()


# ---------------------------------------------------------------------------- totals


def test_totals_are_exact_up_to_the_bound_then_a_lower_bound(lister: Lister, db_url: str) -> None:
    insert(db_url, catalogue(12))
    bound = 5

    def figures(**kw: Any) -> tuple[int, bool, bool, int]:
        found = lister(bound=bound, **kw)
        return found.total, found.total_is_estimate, found.has_next, len(found.rows)

    # past the bound: more than 5 (counting stopped at the 6th)
    assert figures(limit=3) == (5, True, True, 3)
    # a page whose end lies past the bound: more than its end
    assert figures(limit=3, page=2) == (6, True, True, 3)
    assert figures(limit=3, page=3) == (9, True, True, 3)
    # the last page knows: exact
    assert figures(limit=3, page=4) == (12, False, False, 3)
    assert figures(limit=5, page=3) == (12, False, False, 2)
    # past the end: counted, beyond the bound
    assert figures(limit=3, page=9) == (5, True, False, 0)
    # within the bound: exact, on any page
    assert figures(limit=2, type="data_source") == (4, False, True, 2)
    assert figures(limit=2, page=9, type="data_source") == (4, False, False, 0)
    assert figures(limit=2, search="number 1") == (3, False, True, 2)  # 1, 10, 11
    assert figures(limit=1, search="p0") == (5, True, True, 1)
    # nothing: exact zero
    assert figures(limit=3, search="absent") == (0, False, False, 0)


def test_the_bound_is_ten_thousand_through_the_api(server_factory, tmp_path: Path) -> None:
    """10,003 plugins stored: the list says more than 10,000 (TOTAL_BOUND itself, not a
    lowered one), a search or filter under the bound is exact, and the answers say so."""
    assert TOTAL_BOUND == 10_000
    url = (
        postgres_url_for(tmp_path / "bound", 0)
        if on_postgres()
        else f"sqlite:///{tmp_path / 'b.db'}"
    )
    Database(url).migrate()
    plugins = [
        Plugin(
            f"plugin_bulk_{i:05d}",
            f"bulk-{i:05d}",
            "rare one" if i % 1000 == 7 else "bulk plugin",
            type="feature_store" if i % 2 else "data_source",
            created_at=T0 + timedelta(seconds=i),
        )
        for i in range(TOTAL_BOUND + 3)
    ]
    insert(url, plugins)
    srv = server_factory(database_url=url, seed_builtin_plugins="false")
    with srv.client() as c:

        def pagination(**params: Any) -> dict[str, Any]:
            r = c.get("/v1/plugins", params=params)
            assert r.status_code == 200, r.text
            return dict(r.json()["pagination"])

        assert pagination(limit=20) == {
            "page": 1,
            "limit": 20,
            "total": 10_000,
            "has_next": True,
            "total_is_estimate": True,
        }
        assert pagination(search="bulk", limit=20)["total_is_estimate"] is True
        assert pagination(search="rare", limit=20) == {
            "page": 1,
            "limit": 20,
            "total": 10,
            "has_next": False,
            "total_is_estimate": False,
        }
        feature_stores = pagination(type="feature_store", limit=100)
        assert (feature_stores["total"], feature_stores["total_is_estimate"]) == (5001, False)
        last = pagination(limit=100, page=101)
        assert last == {
            "page": 101,
            "limit": 100,
            "total": 10_003,
            "has_next": False,
            "total_is_estimate": False,
        }
        # every item of a deep page is where the list's order puts it
        deep = c.get("/v1/plugins", params={"limit": 25, "page": 400}).json()["data"]
        assert [p["id"] for p in deep] == [p.id for p in plugins[9975:10000]]


# ---------------------------------------------------------------------------- the index kept


def test_delete_and_rename_keep_the_search_index(lister: Lister, db_url: str) -> None:
    insert(
        db_url,
        [
            Plugin(p.id, p.name, p.description, created_at=T0 + timedelta(seconds=i))
            for i, p in enumerate(SEARCHABLE)
        ],
    )
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                delete(PluginRow.__table__).where(PluginRow.__table__.c.id == "plugin_g_001")
            )
            conn.execute(
                update(PluginRow.__table__)
                .where(PluginRow.__table__.c.id == "plugin_b_001")
                .values(name="quack-reader", description="Reads ponds")
            )
    finally:
        engine.dispose()
    assert lister.ids(search="snowflake") == ["plugin_a_001"]
    assert lister.ids(search="duck") == [] and lister.ids(search="db") == [
        "plugin_f_001",
        "plugin_c_001",
    ]
    assert lister.ids(search="quack") == lister.ids(search="ponds") == ["plugin_b_001"]
    assert lister.ids(search="ck") == ["plugin_b_001"]
    # a plugin registered after them ranks after them
    insert(db_url, [Plugin("plugin_z_001", "late-duck", "", created_at=T0 - timedelta(days=1))])
    assert lister.ids(search="ck") == ["plugin_b_001", "plugin_z_001"]
    assert lister(search="ck").total == 2


def test_upgrade_from_0003_indexes_the_plugins_already_stored(empty_url: str) -> None:
    migrate(empty_url, "0003")
    plugins = catalogue(30)
    insert(empty_url, list(reversed(plugins)))  # stored out of creation order
    migrate(empty_url)
    lst = Lister(empty_url)
    try:
        # numbered in list order: a search walks them as the list does
        assert lst.every_id(limit=4, search="plugin number") == lst.offset_ids()
        p02 = {p.id for p in plugins if "p02" in p.name}
        assert lst.ids(search="p02") == [i for i in lst.offset_ids() if i in p02]
        assert lst.ids(search="r 7") == [plugins[7].id]
        assert lst.ids(search="p0") == lst.offset_ids("WHERE name LIKE 'p0%'")
        assert lst(search="9").total == 3  # p009, p019, p029 (names)
        # and it is kept from then on
        insert(
            empty_url,
            [
                Plugin(
                    "plugin_new_001",
                    "newcomer",
                    "after the upgrade",
                    created_at=T0 - timedelta(days=1),
                )
            ],
        )
        assert lst.ids(search="upgrade") == ["plugin_new_001"]
        assert lst.ids(search="ne") == ["plugin_new_001"]
    finally:
        lst.db.dispose()


def test_control_characters_are_refused_before_the_index(admin: httpx.Client) -> None:
    """The padding of the index (U+0001) is never searched for: a term holding a control
    character is a validation error."""
    r = admin.get("/v1/plugins", params={"search": "a\x01"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"] == {"search": "must not contain control characters"}


# ---------------------------------------------------------------------------- kept, exactly


def list_version(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT n FROM plugin_list_version")).scalar_one())
    finally:
        engine.dispose()


def test_a_page_whose_count_is_kept_is_one_statement(lister: Lister, db_url: str) -> None:
    """A first page with its total kept: the page's statement and nothing else (on
    PostgreSQL it reads the list version the kept total is keyed by: `_Reads.rows`), for a
    filter, a list, and a search with and without a filter (issue 13). A version read in
    a statement of its own would make it two round trips."""
    insert(db_url, catalogue(30))
    asks: list[dict[str, Any]] = [
        {"type": "data_sink"},
        {},
        {"search": "plugin number"},
        {"search": "plugin number", "type": "data_sink"},
    ]
    for ask in asks:
        first = lister(limit=2, **ask)
        assert first.has_next and not first.total_is_estimate, ask
        seen = watch_statements(lister.db.engine)
        again = lister(limit=2, **ask)
        assert (again.total, [r.id for r in again.rows]) == (
            first.total,
            [r.id for r in first.rows],
        ), ask
        if lister.db.dialect == "postgresql":
            assert len(seen) == 1 and "list_epoch" in seen[0], (ask, seen)
        else:  # SQLite: statements run in the process (no round trips); none counts
            assert not [s for s in seen if "count(" in s.lower()], (ask, seen)


def test_counts_and_first_rows_are_kept_until_a_change_the_list_can_show(
    lister: Lister, db_url: str
) -> None:
    plugins = catalogue(12)
    insert(db_url, plugins)
    sinks = [p.id for p in plugins if p.type == "data_sink"]
    found = lister(limit=2, type="data_sink")
    assert (found.total, found.total_is_estimate, found.has_next) == (len(sinks), False, True)

    # the same list again: neither counted nor walked anew
    seen = watch_statements(lister.db.engine)
    assert lister(limit=2, type="data_sink").total == len(sinks)
    assert lister(limit=2, page=3, search="plugin number").total == 12
    deep = lister.ids(limit=2, page=5)
    assert deep == lister.offset_ids()[8:10]
    seen.clear()
    assert lister(limit=2, type="data_sink").total == len(sinks)
    assert lister(limit=2, page=3, search="plugin number").total == 12
    assert lister.ids(limit=2, page=5) == deep
    walks = [s for s in seen if s.startswith("SELECT plugins.created_at, plugins.id")]
    assert not [s for s in seen if "count(" in s.lower()] and not walks, seen

    engine = create_engine(db_url)
    plugins_table = PluginRow.__table__
    try:
        # a health result or any other column is not a change of the list: kept
        before = list_version(db_url)
        with engine.begin() as conn:
            conn.execute(
                update(plugins_table)
                .where(plugins_table.c.id == sinks[0])
                .values(health_status="healthy", health_message="ok", config_version=3)
            )
        assert list_version(db_url) == before

        # each change the list shows is counted again
        with engine.begin() as conn:
            for p in plugins[:3]:
                conn.execute(
                    update(plugins_table).where(plugins_table.c.id == p.id).values(type="data_sink")
                )
        assert list_version(db_url) > before
        now = len(sinks) + 2  # plugins 0 and 2 became sinks, 1 was one
        assert lister(limit=2, type="data_sink").total == now
        with engine.begin() as conn:
            conn.execute(delete(plugins_table).where(plugins_table.c.id == sinks[-1]))
        assert lister(limit=2, type="data_sink").total == now - 1
        assert lister(limit=2, page=3, search="plugin number").total == 11
        with engine.begin() as conn:
            conn.execute(
                update(plugins_table)
                .where(plugins_table.c.id == plugins[5].id)
                .values(description="renamed")
            )
        assert lister(limit=2, page=3, search="plugin number").total == 10
        with engine.begin() as conn:
            conn.execute(
                update(plugins_table)
                .where(plugins_table.c.id == plugins[6].id)
                .values(status="inactive")
            )
        inactive = lister.offset_ids("WHERE status = 'inactive'")
        assert lister(limit=1, status="inactive").total == len(inactive)
    finally:
        engine.dispose()

    # a plugin created earlier than every other moves every deep page by one
    insert(db_url, [Plugin("plugin_first_001", "first", "", created_at=T0 - timedelta(days=1))])
    ordered = lister.offset_ids()
    assert ordered[0] == "plugin_first_001"
    assert lister.ids(limit=2, page=5) == ordered[8:10] != deep
    assert lister.every_id(limit=2) == ordered
