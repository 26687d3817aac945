"""Lists answered in front of the framework (server/fast_list.py): plain queries get the very
bytes the route writes; everything else, refusals included, is the route's own answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlx_platform.server.fast_list import FastListMiddleware
from tests.conftest import InProcessServer, assert_error, register, start_inprocess

FRESH = {"Cache-Control": "no-cache"}  # past the read cache: the layer or the route answers


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    server = start_inprocess(tmp_path_factory.mktemp("fastlist") / "home")
    with server.client() as admin:
        for n in range(7):
            register(admin, f"fastlist-tracker-{n}", description=f"a streaming tracker {n}")
    yield server
    server.stop()


def layer(srv: InProcessServer) -> FastListMiddleware:
    found = srv.app.fast_list
    assert isinstance(found, FastListMiddleware)
    return found


PLAIN = [
    {},
    {"limit": "3"},
    {"limit": "2", "page": "3"},
    {"type": "ml_platform"},
    {"status": "registered", "limit": "5"},
    {"category": "tracking"},
    {"search": "streaming", "limit": "4", "page": "2"},
    {"search": "fa"},
    {"sort": "-name", "limit": "4"},
    {"sort": "type", "type": "data_source"},
    {"page": "1000000"},
]


@pytest.mark.parametrize("params", PLAIN, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_plain_lists_are_answered_in_front_with_the_routes_bytes(
    srv: InProcessServer, params: dict[str, str]
) -> None:
    with srv.client(scopes=("plugins:read",)) as reader:
        before = layer(srv).answered
        fast = reader.get("/v1/plugins", params=params, headers=FRESH)
        assert layer(srv).answered == before + 1
        # an extra parameter the route ignores: this layer leaves the request to the route
        routed = reader.get("/v1/plugins", params={**params, "x": "1"}, headers=FRESH)
        assert layer(srv).answered == before + 1
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.headers["content-length"] == routed.headers["content-length"]
    assert fast.headers["x-request-id"].startswith("req_")
    # every header the route's answer has, but the request's own id, with the same value
    same = {k: v for k, v in routed.headers.items() if k != "x-request-id"}
    assert {k: v for k, v in fast.headers.items() if k != "x-request-id"} == same
    assert fast.json()["success"] is True


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"page": "0"},
        {"page": "1000001"},
        {"page": "two"},
        {"status": "running"},
        {"sort": "status"},
        {"sort": "name", "search": "tracker"},
        {"search": ""},
        {"search": "x" * 201},
        {"type": "t" * 65},
        {"search": "a\x07b"},
    ],
    ids=repr,
)
def test_what_the_route_refuses_is_refused_by_the_route(
    srv: InProcessServer, params: dict[str, str]
) -> None:
    with srv.client(scopes=("plugins:read",)) as reader:
        before = layer(srv).answered
        r = reader.get("/v1/plugins", params=params, headers=FRESH)
        assert layer(srv).answered == before
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert error["details"], error


def test_spellings_the_route_takes_are_left_to_it(srv: InProcessServer) -> None:
    """A repeated parameter, a page with a leading zero: the route's models decide."""
    with srv.client(scopes=("plugins:read",)) as reader:
        before = layer(srv).answered
        repeated = reader.get("/v1/plugins?limit=2&limit=3", headers=FRESH)
        padded = reader.get("/v1/plugins?limit=03", headers=FRESH)
        assert layer(srv).answered == before
        plain = reader.get("/v1/plugins?limit=3", headers=FRESH)
    assert repeated.status_code == padded.status_code == 200
    assert len(padded.json()["data"]) == 3
    assert repeated.json()["data"] == plain.json()["data"]  # the last one, as Starlette reads


def test_without_a_valid_token_the_route_answers(srv: InProcessServer) -> None:
    before = layer(srv).answered
    with srv.client(token="") as anonymous:
        missing = anonymous.get("/v1/plugins", headers=FRESH)
        bad = anonymous.get("/v1/plugins", headers={**FRESH, "Authorization": "Bearer not-a-token"})
    assert layer(srv).answered == before
    assert_error(missing, 401, "UNAUTHORIZED")
    assert_error(bad, 401, "UNAUTHORIZED")
