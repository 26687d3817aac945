"""Registrations at once: every one gets its own id, none a 500 (ids are numbered by one
atomic statement; on PostgreSQL a read-then-write would hand out the same number twice)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.conftest import plugin_body


def test_concurrent_registrations_of_one_name_get_distinct_ids(server_factory) -> None:
    server = server_factory(seed_builtin_plugins="false")
    with server.client() as c:

        def register(i: int):
            name = f"racer{i % 3}"
            return c.post("/v1/plugins", json=plugin_body(name, version=f"1.0.{i}"))

        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(register, range(24)))
    assert [r.status_code for r in answers] == [201] * 24, [
        r.text for r in answers if r.status_code != 201
    ]
    ids = [r.json()["data"]["id"] for r in answers]
    assert len(set(ids)) == 24
    for n in range(3):
        numbers = sorted(int(i.rsplit("_", 1)[1]) for i in ids if i.startswith(f"plugin_racer{n}_"))
        assert numbers == list(range(1, 9))


def test_concurrent_duplicate_registrations_answer_409_not_500(server_factory) -> None:
    server = server_factory(seed_builtin_plugins="false")
    with server.client() as c:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(
                pool.map(lambda _: c.post("/v1/plugins", json=plugin_body("twin")), range(8))
            )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] + [409] * 7, [r.text for r in answers]
