"""Issue 10's race, measured from outside: 10 rounds; in each, two data sources whose
`conflicts_with` names each other get 10 activations each at the same moment, through one
replica (SQLite) or spread over three (one PostgreSQL database); counts the rounds in which
both ended active (must be 0).

    .venv/bin/python scripts/measure_conflict_race.py [REPLICAS]
"""

import sys
import tempfile
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import _pg_admin_connect, register, start_server  # noqa: E402

SHARED = {
    "MLX_JWT_SECRET": "x" * 48,
    "MLX_SECRET_KEY": "ZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmQ=",
}


def start(n: int, tmp: Path, env: dict[str, str]) -> list:
    servers: list = [None] * n

    def boot(i: int) -> None:
        servers[i] = start_server(tmp / f"h{i}", **env)

    threads = [threading.Thread(target=boot, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return servers


def one_round(servers: list, rnd: int) -> bool:
    admin = servers[0].client(servers[0].admin_token)
    a, b = f"ca_{rnd}_{uuid.uuid4().hex[:4]}", f"cb_{rnd}_{uuid.uuid4().hex[:4]}"
    ia = register(admin, a, metadata={"conflicts_with": [b]})
    ib = register(admin, b, metadata={"conflicts_with": [a]})
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def fire(k: int, plugin_id: str) -> None:
        client = servers[k % len(servers)].client(servers[0].admin_token)
        barrier.wait()
        codes.append(client.post(f"/v1/plugins/{plugin_id}/activate", json={}).status_code)

    threads = [threading.Thread(target=fire, args=(k, ia if k % 2 else ib)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = [admin.get(f"/v1/plugins/{p}").json()["data"]["status"] for p in (ia, ib)]
    print(f"round {rnd}: {states} answers {sorted(set(codes))}", flush=True)
    for plugin_id in (ia, ib):
        admin.post(f"/v1/plugins/{plugin_id}/deactivate", json={"force": True})
    return states == ["active", "active"]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    env: dict[str, str] = {}
    name = "mlxm_" + uuid.uuid4().hex[:8]
    if n > 1:
        with _pg_admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env = {"MLX_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
        env.update(SHARED)
    servers = start(n, Path(tempfile.mkdtemp()), env)
    try:
        both = sum(one_round(servers, rnd) for rnd in range(10))
        print(f"both active in {both} of 10 rounds ({n} replica(s))")
    finally:
        for srv in servers:
            srv.stop()
        if n > 1:
            with _pg_admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
