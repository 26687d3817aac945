"""Issue 10's metrics loss, measured from outside: two replicas on one PostgreSQL database,
1,000 invocations through each at the same moment (8 client threads), then the stored minute
and hourly rows are compared with the calls answered 200 (they must be equal).

    .venv/bin/python scripts/measure_metrics_two_replicas.py [CHECKOUT]

CHECKOUT (default: this one) is the tree whose tests/conftest.py starts the servers; with
PYTHONPATH=<old checkout>/src it measures an older version (which ran a plugin only on the
replica that activated it: the script then restarts replica B so that it restores it).
"""

import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)

import psycopg  # noqa: E402
from tests.conftest import _pg_admin_connect, register, start_server  # noqa: E402

ECHO = {"operation": "echo", "arguments": {"value": 1}}


def main() -> None:
    name = "mlxm_" + uuid.uuid4().hex[:8]
    with _pg_admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        "MLX_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        "MLX_JWT_SECRET": "x" * 48,
        "MLX_SECRET_KEY": "ZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmRlZmQ=",
    }
    tmp = Path(tempfile.mkdtemp())
    servers = [start_server(tmp / "h0", **env), start_server(tmp / "h1", **env)]
    try:
        token = servers[0].admin_token
        a = servers[0].client(token)
        plugin_id = register(a, "m2_" + uuid.uuid4().hex[:6], isolation="inprocess")
        r = a.post(f"/v1/plugins/{plugin_id}/activate", json={})
        assert r.status_code == 200, r.text
        time.sleep(2)
        warm = servers[1].client(token).post(f"/v1/plugins/{plugin_id}/invoke", json=ECHO)
        if warm.status_code != 200:
            print("replica B cannot invoke (old code): restarting it to restore the plugin")
            servers[1].stop()
            servers[1] = start_server(tmp / "h1", **env)
        sent = [int(warm.status_code == 200)]
        lock = threading.Lock()

        def hammer(srv: object, n: int) -> None:
            client = srv.client(token)  # type: ignore[attr-defined]
            for _ in range(n):
                if client.post(f"/v1/plugins/{plugin_id}/invoke", json=ECHO).status_code == 200:
                    with lock:
                        sent[0] += 1

        threads = [
            threading.Thread(target=hammer, args=(s, 250)) for s in servers for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(7)
    finally:
        for srv in servers:
            srv.stop()  # and their final flush
    query = (
        "select coalesce(sum(count), 0) from metric_buckets where plugin_id=%s and resolution=%s"
    )
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={name}") as conn:
        minute = conn.execute(query, (plugin_id, 60)).fetchone()[0]
        hour = conn.execute(query, (plugin_id, 3600)).fetchone()[0]
    print(f"answered 200: {sent[0]}; stored in minute rows: {minute}, in hourly rows: {hour}")
    with _pg_admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
