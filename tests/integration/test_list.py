"""GET /v1/plugins: filters, search, pagination and parameter checks (the app in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, register, start_inprocess


@contextmanager
def empty_server(home: Path) -> Iterator[httpx.Client]:
    """An admin client of a new server holding no plugin at all (example plugins not seeded)."""
    srv = start_inprocess(home, seed_builtin_plugins="false")
    try:
        with srv.client() as c:
            assert c.get("/v1/plugins").json()["pagination"]["total"] == 0
            yield c
    finally:
        srv.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[httpx.Client]:
    with empty_server(tmp_path / "home") as c:
        yield c


def listing(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/plugins", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return dict(body)


def names(client: httpx.Client, **params: Any) -> set[str]:
    """The names found by a query, checking that the page holds them all and total agrees."""
    body = listing(client, limit=100, **params)
    found = [p["name"] for p in body["data"]]
    assert body["pagination"]["total"] == len(found), body["pagination"]
    assert body["pagination"]["has_next"] is False
    return set(found)


def ids_in_order(client: httpx.Client, **params: Any) -> list[str]:
    return [p["id"] for p in listing(client, limit=100, **params)["data"]]


def activate(client: httpx.Client, pid: str) -> None:
    r = client.post(f"/v1/plugins/{pid}/activate", json={})
    assert r.status_code == 200, r.text


def deactivate(client: httpx.Client, pid: str) -> None:
    r = client.post(f"/v1/plugins/{pid}/deactivate", json={})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- filters


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Six plugins over two types, two categories and all four statuses (read only: the
    tests that use it only list)."""
    with empty_server(tmp_path_factory.mktemp("mixed") / "home") as fresh:
        yield _mixed(fresh)


def _mixed(fresh: httpx.Client) -> httpx.Client:
    a = register(fresh, "a_src", type="data_source", category="warehouse")
    register(fresh, "b_src", type="data_source", category="lake")
    c = register(fresh, "c_ml", type="ml_platform", category="warehouse")
    d = register(fresh, "d_ml", type="ml_platform", category="lake")
    r = fresh.post(
        "/v1/plugins",
        json={
            "name": "e_src",
            "type": "data_source",
            "version": "1.0.0",
            "description": "e",
            "class_path": "mlx_test_plugins.NotAPlugin",
            "category": "warehouse",
        },
    )
    assert r.status_code == 201 and r.json()["data"]["status"] == "error", r.text
    f = register(fresh, "f_src", type="data_source", category="warehouse")
    for pid in (a, c, d, f):
        activate(fresh, pid)
    for pid in (d, f):
        deactivate(fresh, pid)
    return fresh


def test_list_filters_by_type(mixed: httpx.Client) -> None:
    assert names(mixed, type="data_source") == {"a_src", "b_src", "e_src", "f_src"}
    assert names(mixed, type="ml_platform") == {"c_ml", "d_ml"}
    assert names(mixed, type="feature_store") == set()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", {"a_src", "c_ml"}),
        ("registered", {"b_src"}),
        ("inactive", {"d_ml", "f_src"}),
        ("error", {"e_src"}),
    ],
)
def test_list_filters_by_status(mixed: httpx.Client, status: str, expected: set[str]) -> None:
    body = listing(mixed, status=status, limit=100)
    assert {p["name"] for p in body["data"]} == expected
    assert all(p["status"] == status for p in body["data"])
    assert body["pagination"]["total"] == len(expected)


def test_list_filters_by_category(mixed: httpx.Client) -> None:
    assert names(mixed, category="warehouse") == {"a_src", "c_ml", "e_src", "f_src"}
    assert names(mixed, category="lake") == {"b_src", "d_ml"}
    assert names(mixed, category="nowhere") == set()


def test_list_filters_combine(mixed: httpx.Client) -> None:
    assert names(mixed, type="data_source", status="active") == {"a_src"}
    assert names(mixed, type="data_source", category="warehouse") == {"a_src", "e_src", "f_src"}
    assert names(mixed, status="inactive", category="lake") == {"d_ml"}
    assert names(mixed, type="data_source", category="warehouse", status="inactive") == {"f_src"}
    assert names(mixed, type="ml_platform", status="registered") == set()
    assert names(mixed, type="data_source", status="error", category="lake") == set()


def test_list_filters_combine_with_search(mixed: httpx.Client) -> None:
    assert names(mixed, search="src", category="warehouse", status="active") == {"a_src"}
    assert names(mixed, search="_ml", status="inactive") == {"d_ml"}


def test_list_category_filter_finds_category_given_in_metadata(fresh: httpx.Client) -> None:
    register(fresh, "meta_cat", metadata={"category": "streaming"})
    register(fresh, "other_cat", category="batch")
    assert names(fresh, category="streaming") == {"meta_cat"}


def test_list_of_empty_registry_is_an_empty_page(fresh: httpx.Client) -> None:
    body = listing(fresh)
    assert body["data"] == []
    assert body["pagination"] == {
        "page": 1,
        "limit": 20,
        "total": 0,
        "has_next": False,
        "total_is_estimate": False,
    }


def test_list_items_carry_the_summary_fields(fresh: httpx.Client) -> None:
    register(
        fresh,
        "shape",
        category="warehouse",
        configuration_schema={
            "account": {"type": "string", "required": True},
            "warehouse": {"type": "string", "default": "WH"},
        },
        metadata={
            "capabilities": ["sql_queries"],
            "integration_points": ["ml_platforms"],
            "conflicts_with": ["other"],
            "min_memory_mb": 256,
            "min_cpu_cores": 1,
        },
    )
    (item,) = listing(fresh)["data"]
    for key in (
        "id",
        "name",
        "type",
        "version",
        "status",
        "description",
        "category",
        "capabilities",
        "conflicts_with",
        "integration_points",
        "resource_requirements",
        "configuration",
        "health",
        "created_at",
        "updated_at",
    ):
        assert key in item, key
    assert item["capabilities"] == ["sql_queries"]
    assert item["conflicts_with"] == ["other"]
    assert item["integration_points"] == ["ml_platforms"]
    assert item["resource_requirements"]["min_memory_mb"] == 256
    assert item["resource_requirements"]["gpu_required"] is False
    assert item["configuration"]["required_fields"] == ["account"]
    assert item["configuration"]["optional_fields"] == ["warehouse"]
    assert {"status", "last_check", "response_time_ms"} <= set(item["health"])


# ---------------------------------------------------------------- search


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Four plugins to search (read only: the tests that use it only list)."""
    with empty_server(tmp_path_factory.mktemp("searchable") / "home") as fresh:
        register(fresh, "Snowflake_Conn", description="Cloud WAREHOUSE connector")
        register(fresh, "postgres_reader", description="Reads rows from PostgreSQL")
        register(fresh, "csv_files", description="Loads comma separated values")
        register(fresh, "percent", description="Keeps 100% of the data")
        yield fresh


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("snowflake", {"Snowflake_Conn"}),
        ("SNOWFLAKE", {"Snowflake_Conn"}),
        ("FLAKE_c", {"Snowflake_Conn"}),
        ("reader", {"postgres_reader"}),
        ("CSV_F", {"csv_files"}),
    ],
)
def test_list_search_matches_name_substrings_ignoring_case(
    searchable: httpx.Client, term: str, expected: set[str]
) -> None:
    assert names(searchable, search=term) == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("warehouse", {"Snowflake_Conn"}),
        ("Warehouse Conn", {"Snowflake_Conn"}),
        ("postgresql", {"postgres_reader"}),
        ("SEPARATED", {"csv_files"}),
        ("ows fr", {"postgres_reader"}),
    ],
)
def test_list_search_matches_description_substrings_ignoring_case(
    searchable: httpx.Client, term: str, expected: set[str]
) -> None:
    assert names(searchable, search=term) == expected


def test_list_search_matches_name_or_description(searchable: httpx.Client) -> None:
    # A plugin whose name and description both match is listed once.
    body = listing(searchable, search="postgres")
    assert [p["name"] for p in body["data"]] == ["postgres_reader"]
    assert body["pagination"]["total"] == 1
    # "Kee" only in a description, "perc" only in a name: both find the same plugin.
    assert names(searchable, search="kee") == names(searchable, search="PERC") == {"percent"}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("ro", {"postgres_reader"}),
        ("RO", {"postgres_reader"}),
        ("sV", {"csv_files"}),
        ("w", {"Snowflake_Conn", "postgres_reader"}),
        ("W", {"Snowflake_Conn", "postgres_reader"}),
        ("q", {"postgres_reader"}),
        ("k", {"Snowflake_Conn", "percent"}),
        ("zz", set()),
    ],
)
def test_list_search_short_terms_match_substrings_ignoring_case(
    searchable: httpx.Client, term: str, expected: set[str]
) -> None:
    assert names(searchable, search=term) == expected


@pytest.mark.parametrize("term", ["%", "0%", "0% o"])
def test_list_search_treats_percent_literally(searchable: httpx.Client, term: str) -> None:
    assert names(searchable, search=term) == {"percent"}


def test_list_search_treats_underscore_literally(fresh: httpx.Client) -> None:
    register(fresh, "with_underscore", description="first")
    register(fresh, "nounderscore", description="second")
    assert names(fresh, search="_") == {"with_underscore"}
    assert names(fresh, search="h_u") == {"with_underscore"}


def test_list_search_without_match_is_empty(searchable: httpx.Client) -> None:
    body = listing(searchable, search="databricks")
    assert body["data"] == []
    assert body["pagination"]["total"] == 0
    assert body["pagination"]["has_next"] is False


def test_list_search_short_term_ignores_case_of_accented_letters(fresh: httpx.Client) -> None:
    register(fresh, "eclair", description="ÉCLAIR ÜBER SOURCE")
    register(fresh, "plain", description="nothing accented")
    assert names(fresh, search="écl") == {"eclair"}  # 3+ characters
    assert names(fresh, search="é") == {"eclair"}  # 1 character
    assert names(fresh, search="üb") == {"eclair"}  # 2 characters


# ---------------------------------------------------------------- pagination


@pytest.fixture
def seven(fresh: httpx.Client) -> tuple[httpx.Client, list[str]]:
    ids = [register(fresh, f"pg_{i}", description=f"page plugin {i}") for i in range(7)]
    return fresh, ids


def test_list_pages_cover_everything_once_in_registration_order(
    seven: tuple[httpx.Client, list[str]],
) -> None:
    client, ids = seven
    pages = [listing(client, page=p, limit=3) for p in (1, 2, 3)]
    assert [len(p["data"]) for p in pages] == [3, 3, 1]
    assert [p["pagination"]["has_next"] for p in pages] == [True, True, False]
    for number, p in enumerate(pages, start=1):
        assert p["pagination"]["page"] == number
        assert p["pagination"]["limit"] == 3
        assert p["pagination"]["total"] == 7
    seen = [item["id"] for p in pages for item in p["data"]]
    assert len(seen) == len(set(seen)) == 7  # no overlap, nothing missing
    assert seen == ids  # created_at order = registration order


def test_list_page_past_the_end_is_empty_with_the_right_total(
    seven: tuple[httpx.Client, list[str]],
) -> None:
    client, _ = seven
    body = listing(client, page=4, limit=3)
    assert body["data"] == []
    assert body["pagination"] == {
        "page": 4,
        "limit": 3,
        "total": 7,
        "has_next": False,
        "total_is_estimate": False,
    }


def test_list_has_next_is_false_when_the_last_page_is_exactly_full(
    seven: tuple[httpx.Client, list[str]],
) -> None:
    client, _ = seven
    assert listing(client, page=1, limit=7)["pagination"]["has_next"] is False
    assert listing(client, page=1, limit=6)["pagination"]["has_next"] is True
    assert listing(client, page=2, limit=6)["pagination"]["has_next"] is False


def test_list_pagination_applies_to_search_results(
    seven: tuple[httpx.Client, list[str]],
) -> None:
    client, ids = seven
    register(client, "unrelated", description="something else")
    first = listing(client, search="page plugin", page=1, limit=4)
    second = listing(client, search="page plugin", page=2, limit=4)
    assert first["pagination"]["total"] == second["pagination"]["total"] == 7
    assert [p["id"] for p in first["data"] + second["data"]] == ids


def test_list_order_is_stable_across_calls_and_state_changes(
    seven: tuple[httpx.Client, list[str]],
) -> None:
    client, ids = seven
    assert ids_in_order(client) == ids_in_order(client) == ids
    activate(client, ids[3])
    r = client.patch(f"/v1/plugins/{ids[5]}/configuration", json={"configuration": {"x": 1}})
    assert r.status_code == 200, r.text
    deactivate(client, ids[3])
    assert ids_in_order(client) == ids
    pages = [p["id"] for n in (1, 2, 3, 4) for p in listing(client, page=n, limit=2)["data"]]
    assert pages == ids


def test_list_default_limit_is_20(fresh: httpx.Client) -> None:
    ids = [register(fresh, f"many_{i:02d}") for i in range(21)]
    first = listing(fresh)
    assert first["pagination"] == {
        "page": 1,
        "limit": 20,
        "total": 21,
        "has_next": True,
        "total_is_estimate": False,
    }
    assert [p["id"] for p in first["data"]] == ids[:20]
    second = listing(fresh, page=2)
    assert [p["id"] for p in second["data"]] == ids[20:]
    assert second["pagination"]["has_next"] is False


# ---------------------------------------------------------------- invalid parameters


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "0"),
        ("limit", "101"),
        ("limit", "abc"),
        ("limit", "-5"),
        ("page", "0"),
        ("page", "-1"),
        ("page", "two"),
        ("status", "bogus"),
        ("status", "ACTIVE"),
    ],
)
def test_list_rejects_invalid_parameter(admin: httpx.Client, param: str, value: str) -> None:
    err = assert_error(admin.get("/v1/plugins", params={param: value}), 422, "VALIDATION_ERROR")
    assert param in err["details"], err
    assert param in str(err["message"])


def test_list_rejects_limit_above_100(admin: httpx.Client) -> None:
    err = assert_error(admin.get("/v1/plugins?limit=101"), 422, "VALIDATION_ERROR")
    assert list(err["details"]) == ["limit"]


def test_list_rejects_limit_zero(admin: httpx.Client) -> None:
    err = assert_error(admin.get("/v1/plugins?limit=0"), 422, "VALIDATION_ERROR")
    assert list(err["details"]) == ["limit"]


def test_list_names_every_invalid_parameter(admin: httpx.Client) -> None:
    r = admin.get("/v1/plugins", params={"limit": "abc", "page": "0"})
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert {"limit", "page"} <= set(err["details"])


@pytest.mark.parametrize("limit", ["1", "100"])
def test_list_accepts_limit_bounds(admin: httpx.Client, limit: str) -> None:
    body = listing(admin, limit=limit)
    assert body["pagination"]["limit"] == int(limit)
    assert len(body["data"]) <= int(limit)


def test_list_accepts_every_documented_status(admin: httpx.Client) -> None:
    for status in ("registered", "active", "inactive", "error"):
        assert listing(admin, status=status)["success"] is True
