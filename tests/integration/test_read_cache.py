"""The read cache in front of the routes (server/read_cache.py): repeated reads answered from
bytes, and never an answer older than a change the reader could know of."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from mlx_platform.server.read_cache import STALE_S, ReadCacheMiddleware
from tests.conftest import InProcessServer, LiveServer, assert_error, poll, register


@pytest.fixture
def srv(server_factory: Callable[..., LiveServer]) -> InProcessServer:
    server = server_factory()
    assert isinstance(server, InProcessServer)
    return server


def cache_of(server: InProcessServer) -> ReadCacheMiddleware:
    cache = server.app.read_cache
    assert isinstance(cache, ReadCacheMiddleware)
    return cache


class PluginReads:
    """Statements that read the plugins table, as the database receives them."""

    def __init__(self, server: InProcessServer) -> None:
        self.engine = server.core.db.engine
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if "FROM plugins" in statement and statement.lstrip().upper().startswith("SELECT"):
            with self.lock:
                self.count += 1


@pytest.fixture
def reads(srv: InProcessServer) -> Iterator[PluginReads]:
    spy = PluginReads(srv)
    event.listen(spy.engine, "before_cursor_execute", spy)
    yield spy
    event.remove(spy.engine, "before_cursor_execute", spy)


def description_of(client: httpx.Client, plugin_id: str) -> str:
    r = client.get(f"/v1/plugins/{plugin_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["description"])


def set_description(srv: InProcessServer, plugin_id: str, words: str) -> None:
    """A change written past the API (as a background task or another process would)."""
    with srv.core.db.transaction() as session:
        session.execute(
            text("UPDATE plugins SET description = :d WHERE id = :id"),
            {"d": words, "id": plugin_id},
        )


def test_a_repeated_read_is_served_from_bytes_with_its_own_request_id(
    srv: InProcessServer, reads: PluginReads
) -> None:
    with srv.client(scopes=("plugins:read",)) as c:
        # A change notification between the two (on PostgreSQL, the start's own writes are
        # heard a moment later) rightly makes the second read again: try a few pairs.
        for limit in range(2, 7):  # a query not asked before each time
            before = reads.count
            first = c.get("/v1/plugins", params={"limit": limit})
            read_by_first = reads.count
            second = c.get("/v1/plugins", params={"limit": limit})
            if reads.count == read_by_first:
                break
    assert first.status_code == second.status_code == 200
    assert read_by_first > before and reads.count == read_by_first  # the second read nothing
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert second.headers["x-mlx-node"] == first.headers["x-mlx-node"]
    assert cache_of(srv).counts["fresh"] >= 1


def test_a_change_through_the_api_is_read_at_once(srv: InProcessServer) -> None:
    with srv.client() as admin:
        before = admin.get("/v1/plugins", params={"limit": 100}).json()
        new_id = register(admin, "read_cache_new_one")
        after = admin.get("/v1/plugins", params={"limit": 100}).json()
        assert after["pagination"]["total"] == before["pagination"]["total"] + 1
        assert new_id in [p["id"] for p in after["data"]]
        assert admin.get(f"/v1/plugins/{new_id}").status_code == 200
        assert admin.delete(f"/v1/plugins/{new_id}").status_code == 200
        assert_error(admin.get(f"/v1/plugins/{new_id}"), 404, "PLUGIN_NOT_FOUND")


def test_a_kept_answer_never_skips_the_token_check(srv: InProcessServer) -> None:
    with srv.client(scopes=("plugins:read",)) as reader:
        assert reader.get("/v1/plugins").status_code == 200
        assert reader.get("/v1/plugins").status_code == 200  # kept now
    assert_error(srv.anonymous.get("/v1/plugins"), 401, "UNAUTHORIZED")
    with srv.client(token="not-a-token") as bad:
        assert_error(bad.get("/v1/plugins"), 401, "UNAUTHORIZED")
    with srv.client(token=srv.token("plugins:read", ttl=1)) as short:
        assert short.get("/v1/plugins").status_code == 200
        poll(
            lambda: short.get("/v1/plugins").status_code,
            lambda status: status == 401,
            timeout=5,
            what="the expired token refused",
        )


def test_a_change_notification_is_read_at_once(srv: InProcessServer) -> None:
    """What another replica announces (PostgreSQL NOTIFY) is never answered from before."""
    with srv.client(scopes=("plugins:read",)) as c:
        plugin_id = c.get("/v1/plugins").json()["data"][0]["id"]
        description_of(c, plugin_id)
        set_description(srv, plugin_id, "announced elsewhere")
        srv.core.db.announced()  # what the listener does for each notification
        assert description_of(c, plugin_id) == "announced elsewhere"


def test_a_change_written_past_the_api_is_read_within_seconds(srv: InProcessServer) -> None:
    with srv.client(scopes=("plugins:read",)) as c:
        plugin_id = c.get("/v1/plugins").json()["data"][0]["id"]
        description_of(c, plugin_id)
        set_description(srv, plugin_id, "written in the background")
        t0 = time.monotonic()
        poll(
            lambda: description_of(c, plugin_id),
            lambda words: words == "written in the background",
            timeout=STALE_S + 2,
            what="the background change read",
        )
        assert time.monotonic() - t0 < STALE_S + 1


def test_misses_at_once_read_the_database_once(srv: InProcessServer, reads: PluginReads) -> None:
    with srv.client(scopes=("plugins:read",)) as c:
        c.get("/v1/plugins", params={"limit": 3})  # the token verified and kept
        alone = reads.count
        c.get("/v1/plugins", params={"limit": 4})
        per_answer = reads.count - alone
        assert per_answer > 0
        before = reads.count
        answers: list[int] = []
        barrier = threading.Barrier(12)

        def one() -> None:
            barrier.wait()
            answers.append(c.get("/v1/plugins", params={"limit": 5}).status_code)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == [200] * 12
    # one route call for the twelve (two when a background write landed in between)
    assert reads.count - before <= 2 * per_answer


def test_only_gets_of_plugins_answered_200_are_kept(srv: InProcessServer) -> None:
    with srv.client(scopes=("plugins:read",)) as c:
        for _ in range(2):
            assert_error(c.get("/v1/plugins/plugin_nothing_404"), 404, "PLUGIN_NOT_FOUND")
            assert_error(c.get("/v1/plugins", params={"limit": 0}), 422, "VALIDATION_ERROR")
            assert c.head("/v1/plugins").status_code in (200, 405)
            assert c.get("/v1/plugins/discover").status_code == 403  # a write scope's route
    assert cache_of(srv).answers == {}


@pytest.mark.parametrize(
    "header",
    [
        ("Cache-Control", "no-cache"),
        ("Cache-Control", "max-age=0, no-store"),
        ("Pragma", "no-cache"),
    ],
)
def test_a_request_for_a_fresh_answer_reads_the_database(
    srv: InProcessServer, reads: PluginReads, header: tuple[str, str]
) -> None:
    with srv.client(scopes=("plugins:read",)) as c:
        assert c.get("/v1/plugins").status_code == 200
        assert c.get("/v1/plugins").status_code == 200
        before = reads.count
        assert c.get("/v1/plugins", headers=dict([header])).status_code == 200
        assert reads.count > before
