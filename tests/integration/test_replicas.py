"""Several `mlx serve` replicas on one PostgreSQL database (issue 10), over real HTTP.

Three replicas start at the same moment on a fresh database (their own MLX_HOME each, one
MLX_DATABASE_URL, one MLX_JWT_SECRET and MLX_SECRET_KEY) and are shared by the tests of this
module that leave them as they found them; tests that need other settings (restart delays,
restart budget) start servers of their own on a database of their own. Every database is
created here and dropped at teardown: these tests need PostgreSQL on 127.0.0.1:5432 whatever
MLX_TEST_DATABASE says, and fail (never skip) when it cannot be reached.

The promises checked: every replica runs every active plugin in a worker process of its own; a
change made through any replica is live on every replica within 1 s (asserted as 1 s plus an
allowance of 0.5 s for this noisy 2-core machine, with the measured time in the message);
every answer names its replica (`X-MLX-Node`); `GET /v1/nodes` lists the replicas; health
lists every live replica's view; the conflict rules hold across replicas; metrics add up
across replicas; crashes (a replica or a worker SIGKILLed) leave nothing stuck, nothing
running twice, no orphan worker; the restart budget resets; CPU cores are a per-replica
minimum. Waits poll with deadlines.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import (
    FIXTURE_PLUGINS,
    POSTGRES_SERVER,
    KeepCalling,
    LiveServer,
    assert_error,
    holds,
    http_client,
    http_get,
    invoke,
    process_gone,
    register,
    start_server,
)
from tests.conftest import (
    poll_timed as poll,  # (value, seconds): the replica tests time propagation
)

# replicas are `mlx serve` processes (on PostgreSQL whatever MLX_TEST_DATABASE says)
pytestmark = pytest.mark.process


PROBE = "mlx_test_plugins.WorkerProbePlugin"
CRASH_ON_START = "mlx_test_plugins.CrashOnStartPlugin"
SLOW_START = "mlx_replica_test_plugins.SlowStartPlugin"

REPLICAS = 3
# The promise: a change made through one replica is live on every replica within 1 s.
LIVE_LIMIT_S = 1.0
# Slack for this noisy 2-core machine (HTTP round trips, 50 ms polling, three services).
LIVE_ALLOWANCE_S = 0.5
HEARTBEAT_S = 0.5
DEAD_AFTER_S = 3.0
# Another replica's invocations reach storage at its next metrics flush (every 5 s).
METRICS_FLUSH_S = 5.0
# Workers of a SIGKILLed replica notice their closed socket and end "within a few seconds".
ORPHAN_LIMIT_S = 5.0
INSTANCE_STATES = {"starting", "running", "not_started", "restarting", "error", "stopping"}

# A plugin whose start() takes a while, to SIGKILL a replica in the middle of an activation.
# Written to a folder on the replicas' PYTHONPATH (the shared fixture plugins stay untouched).
SLOW_START_SOURCE = '''
"""Test plugins of test_replicas.py."""

import os
import time

from mlx_test_plugins import WorkerProbePlugin


class SlowStartPlugin(WorkerProbePlugin):
    """start() appends its process id to `start_log` (when set), then sleeps `start_delay` s."""

    def start(self) -> None:
        start_log = self.config.get("start_log")
        if start_log:
            with open(start_log, "a") as fh:
                fh.write(f"{os.getpid()}\\n")
        time.sleep(float(self.config.get("start_delay") or 0))
'''

# ---------------------------------------------------------------- PostgreSQL


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        autocommit=True,
        connect_timeout=10,
    )


def create_database() -> str:
    """A fresh, empty database; its SQLAlchemy URL. Fails the test when PostgreSQL is away."""
    name = f"mlx_replicas_{uuid.uuid4().hex[:16]}"
    try:
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - any failure to reach PostgreSQL fails the test
        pytest.fail(
            f"the replica tests need PostgreSQL on 127.0.0.1:5432 (user postgres): {exc}",
            pytrace=False,
        )
    return f"{POSTGRES_SERVER}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shared_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "MLX_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "MLX_SECRET_KEY": Fernet.generate_key().decode(),
    }


# ---------------------------------------------------------------- polling


def assert_live_within_limit(times: dict[int, float], what: str) -> None:
    slowest = max(times.values())
    limit = LIVE_LIMIT_S + LIVE_ALLOWANCE_S
    seen = ", ".join(f"replica {i}: {t:.2f} s" for i, t in sorted(times.items()))
    assert slowest <= limit, (
        f"{what}: live on every replica after {slowest:.2f} s, promised {LIVE_LIMIT_S:g} s "
        f"(+{LIVE_ALLOWANCE_S:g} s allowance) [{seen}]"
    )


# ---------------------------------------------------------------- processes


def parent_of(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def worker_children(server_pid: int) -> list[int]:
    """Live worker processes (`mlx_platform.runtime.worker`) whose parent is `server_pid`."""
    found = []
    try:
        children = psutil.Process(server_pid).children()
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "mlx_platform.runtime.worker" in (
                " ".join(child.cmdline())
            ):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(found)


def wait_all_gone(pids: list[int], timeout: float, what: str) -> float:
    _, took = poll(
        lambda: [p for p in pids if not process_gone(p)],
        lambda left: not left,
        timeout=timeout,
        what=what,
    )
    return took


# ---------------------------------------------------------------- HTTP helpers


def call(client: httpx.Client, plugin_id: str, operation: str, **args: Any) -> Any:
    r = invoke(client, plugin_id, operation, **args)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def detail(client: httpx.Client, plugin_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{plugin_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def health_answer(client: httpx.Client, plugin_id: str) -> httpx.Response:
    r = client.get(f"/v1/plugins/{plugin_id}/health")
    assert r.status_code == 200, r.text
    return r


def replica_views(client: httpx.Client, plugin_id: str) -> dict[str, dict[str, Any]]:
    """The plugin's `replicas` (health) as seen through `client`, by node id."""
    data = health_answer(client, plugin_id).json()["data"]
    return {str(v["node_id"]): dict(v) for v in data["replicas"]}


def nodes(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/v1/nodes")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True, body
    return list(body["data"])


def activate(
    client: httpx.Client, plugin_id: str, configuration: dict[str, Any] | None = None
) -> httpx.Response:
    r = client.post(
        f"/v1/plugins/{plugin_id}/activate", json={"configuration": configuration or {}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "active", r.text
    return r


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class InBackground(threading.Thread):
    """Run one request on a thread of its own; `.response` or `.error` once joined."""

    def __init__(self, func: Callable[[], httpx.Response]) -> None:
        super().__init__(daemon=True)
        self.func = func
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.response = self.func()
        except BaseException as exc:  # noqa: BLE001 - looked at by the test
            self.error = exc


# ---------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """Replicas of one service on one database, each on its own MLX_HOME."""

    workdir: Path
    database_url: str
    settings: dict[str, str]
    servers: list[LiveServer] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    token: str = ""
    # Plugins the running test registered: deleted (force) after it.
    tracked: list[str] = field(default_factory=list)

    def home(self, i: int) -> Path:
        return self.workdir / f"replica{i}"

    def _start_one(self, i: int) -> LiveServer:
        return start_server(self.home(i), **self.settings)

    def start(self, indexes: list[int]) -> None:
        """Start these replicas at the same moment (one thread each, behind a barrier)."""
        barrier = threading.Barrier(len(indexes))
        started: dict[int, LiveServer] = {}
        errors: dict[int, BaseException] = {}

        def run(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                started[i] = self._start_one(i)
            except BaseException as exc:  # noqa: BLE001 - raised below
                errors[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in indexes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if errors:
            for srv in started.values():
                srv.stop()
            raise AssertionError(
                "replicas that did not start: "
                + "; ".join(f"replica {i}: {e}" for i, e in sorted(errors.items()))
            )
        for i in indexes:
            if i < len(self.servers):
                self.servers[i] = started[i]
            else:
                self.servers.append(started[i])
        if not self.token:
            self.token = self.servers[0].admin_token
        self.node_ids = [self.node_id_of(i) for i in range(len(self.servers))]

    def node_id_of(self, i: int) -> str:
        r = http_get(f"{self.servers[i].url}/healthz", timeout=10)
        return str(r.headers.get("x-mlx-node", ""))

    def client(self, i: int, token: str | None = None) -> httpx.Client:
        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return http_client(base_url=self.servers[i].url, headers=headers, timeout=60)

    def pid(self, i: int) -> int:
        return int(self.servers[i].process.pid)

    def kill(self, i: int) -> int:
        """SIGKILL replica i (the service process only); its old process id."""
        srv = self.servers[i]
        pid = srv.process.pid
        os.kill(pid, signal.SIGKILL)
        srv.process.wait(30)
        return pid

    def restart(self, i: int) -> LiveServer:
        """Start replica i again: same MLX_HOME, same database."""
        self.servers[i] = self._start_one(i)
        self.node_ids[i] = self.node_id_of(i)
        return self.servers[i]

    def ensure_running(self) -> None:
        """Start again any replica a failed test left dead."""
        for i, srv in enumerate(self.servers):
            if srv.process.poll() is not None:
                self.restart(i)

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()

    def log_lines(self, *words: str) -> str:
        """The replicas' log lines that contain any of `words` (for failure messages)."""
        return "\n".join(
            f"[replica {i}] {line}"
            for i, srv in enumerate(self.servers)
            for line in srv.log_text().splitlines()
            if any(w in line for w in words)
        )


def cluster_settings(database_url: str, extra_pythonpath: Path | None = None) -> dict[str, str]:
    settings = {
        "MLX_DATABASE_URL": database_url,
        **shared_secrets(),
        "MLX_NODE_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
        "MLX_NODE_DEAD_AFTER": str(DEAD_AFTER_S),
        "MLX_HEALTH_INTERVAL": "1",
        "MLX_CAPACITY_CPU_CORES": "2",
        "MLX_RESTART_BACKOFF_BASE": "1",
        "MLX_RESTART_BACKOFF_CAP": "2",
        "MLX_MAX_RESTARTS": "20",
    }
    if extra_pythonpath is not None:
        settings["PYTHONPATH"] = os.pathsep.join(
            p
            for p in (str(FIXTURE_PLUGINS), str(extra_pythonpath), os.environ.get("PYTHONPATH"))
            if p
        )
    return settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("replicas")
    plugin_dir = workdir / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "mlx_replica_test_plugins.py").write_text(SLOW_START_SOURCE)
    url = create_database()
    c = Cluster(workdir, url, cluster_settings(url, plugin_dir))
    try:
        c.start(list(range(REPLICAS)))
        yield c
    finally:
        c.stop()
        drop_database(url)


@pytest.fixture
def replicas(cluster: Cluster) -> Iterator[Cluster]:
    """The shared cluster, every replica running; plugins the test `track`s are deleted
    (force) afterwards, so that they do not load the replicas of later tests."""
    cluster.ensure_running()
    cluster.tracked.clear()
    yield cluster
    cluster.ensure_running()
    with cluster.client(0) as client:
        for plugin_id in cluster.tracked:
            try:
                client.delete(f"/v1/plugins/{plugin_id}", params={"force": "true"}, timeout=60)
            except httpx.HTTPError:
                pass
    cluster.tracked.clear()


@pytest.fixture
def clients(replicas: Cluster) -> Iterator[list[httpx.Client]]:
    """An admin client per replica."""
    made = [replicas.client(i) for i in range(REPLICAS)]
    yield made
    for c in made:
        c.close()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


def track(cluster: Cluster, plugin_id: str) -> str:
    cluster.tracked.append(plugin_id)
    return plugin_id


def running_pid(cluster: Cluster, client: httpx.Client, i: int, plugin_id: str) -> int | None:
    """The worker process id of the plugin on replica i, when replica i serves it from a
    worker of its own; else None."""
    try:
        r = invoke(client, plugin_id, "pid")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    assert r.headers.get("x-mlx-node") == cluster.node_ids[i], r.headers
    pid = int(r.json()["data"]["result"])
    assert parent_of(pid) == cluster.pid(i), (
        f"replica {i} (pid {cluster.pid(i)}) answered from process {pid}, whose parent is "
        f"{parent_of(pid)}"
    )
    return pid


def until_everywhere(
    n: int, check: Callable[[int], bool], t0: float, *, timeout: float = 15.0, what: str
) -> dict[int, float]:
    """Poll `check(i)` for each of n replicas until it held for every one; the seconds
    since `t0` at which each first held."""
    seen: dict[int, float] = {}
    while True:
        for i in range(n):
            if i not in seen and check(i):
                seen[i] = time.monotonic() - t0
        if len(seen) == n:
            return seen
        if time.monotonic() - t0 > timeout:
            missing = [i for i in range(n) if i not in seen]
            raise AssertionError(
                f"{what}: not on replica(s) {missing} within {timeout:g} s (others: {seen})"
            )
        time.sleep(0.05)


def pids_everywhere(
    cluster: Cluster, clients: list[httpx.Client], plugin_id: str, timeout: float = 15.0
) -> dict[int, int]:
    """Wait until every replica serves the plugin from a worker of its own; their pids."""
    pids: dict[int, int] = {}

    def runs(i: int) -> bool:
        pid = running_pid(cluster, clients[i], i, plugin_id)
        if pid is not None:
            pids[i] = pid
        return pid is not None

    until_everywhere(len(clients), runs, time.monotonic(), timeout=timeout, what="running")
    return pids


def all_running(cluster: Cluster, views: dict[str, dict[str, Any]]) -> bool:
    return set(views) == set(cluster.node_ids) and all(
        v["state"] == "running" for v in views.values()
    )


def assert_each_plugin_runs_once_per_replica(cluster: Cluster, client: httpx.Client) -> None:
    """On every replica, the live worker processes (psutil: children of the replica whose
    command line is `mlx_platform.runtime.worker`) are exactly the pids of its instances that
    `GET /v1/nodes` reports running, one per plugin: no plugin runs twice on one replica."""
    by_node = {node_id: i for i, node_id in enumerate(cluster.node_ids)}

    def compare() -> list[tuple[int, list[int], list[int], list[str]]]:
        out = []
        for node in nodes(client):
            i = by_node.get(node["id"])
            assert i is not None, f"unknown node listed: {node}"
            running = [x for x in node["instances"] if x["state"] == "running"]
            out.append(
                (
                    i,
                    worker_children(cluster.pid(i)),
                    sorted(int(x["pid"]) for x in running),
                    [x["plugin_id"] for x in node["instances"]],
                )
            )
        return out

    seen, _ = poll(
        compare,
        lambda rows: len(rows) == len(cluster.node_ids) and all(r[1] == r[2] for r in rows),
        timeout=10,
        what="each replica's worker processes are its running instances",
    )
    for i, children, _pids, plugin_ids in seen:
        assert len(plugin_ids) == len(set(plugin_ids)), (i, plugin_ids)
        assert len(children) == len(set(children)), (i, children)


# ================================================================ nodes and the header


def test_three_replicas_started_together_list_each_other_and_name_themselves_in_every_answer(
    replicas: Cluster, clients: list[httpx.Client]
) -> None:
    ids = replicas.node_ids
    assert all(ids), f"X-MLX-Node missing on /healthz: {ids}"
    assert len(set(ids)) == REPLICAS, ids

    for i, client in enumerate(clients):
        answers = {
            "GET /healthz": client.get("/healthz"),
            "GET /v1/plugins": client.get("/v1/plugins"),
            "404": client.get("/v1/plugins/no_such_plugin_xyz"),
            "401": http_get(f"{replicas.servers[i].url}/v1/plugins", timeout=10),
            "POST invalid": client.post("/v1/plugins", json={"name": 3}),
        }
        for what, r in answers.items():
            assert r.headers.get("x-mlx-node") == ids[i], (i, what, r.status_code, r.headers)

    # Each lists the three, alive (they heartbeat from the moment they join).
    for i, client in enumerate(clients):
        r = client.get("/v1/nodes")
        assert r.status_code == 200, r.text
        assert r.headers["x-mlx-node"] == ids[i]
        listed = r.json()["data"]
        by_id = {n["id"]: n for n in listed}
        assert set(by_id) == set(ids), f"replica {i} lists {listed}\n" + replicas.log_lines(
            "joined", "dead", "heartbeat"
        )
        for j, node_id in enumerate(ids):
            node = by_id[node_id]
            assert {
                "id",
                "host",
                "pid",
                "address",
                "version",
                "started_at",
                "heartbeat_at",
                "alive",
                "this_node",
                "capacity",
                "instances",
            } <= set(node), node
            assert node["alive"] is True, node
            assert node["this_node"] is (j == i), (i, node)
            assert node["pid"] == replicas.pid(j), (node, replicas.pid(j))
            assert isinstance(node["host"], str) and node["host"]
            assert isinstance(node["version"], str) and node["version"]
            assert {"memory_mb", "cpu_cores", "gpus"} <= set(node["capacity"])
            assert node["capacity"]["cpu_cores"] == 2  # MLX_CAPACITY_CPU_CORES
            assert node["capacity"]["memory_mb"] > 0
            assert isinstance(node["instances"], list)
            parse_time(node["started_at"])
            parse_time(node["heartbeat_at"])

    # Heartbeats go on (every 0.5 s here): every node's heartbeat_at moves forward.
    first = {n["id"]: parse_time(n["heartbeat_at"]) for n in nodes(clients[0])}
    poll(
        lambda: {n["id"]: parse_time(n["heartbeat_at"]) for n in nodes(clients[1])},
        lambda now: set(now) == set(first) and all(now[k] > first[k] for k in first),
        timeout=5 * HEARTBEAT_S + 2,
        what="every node's heartbeat_at advanced",
    )


def test_nodes_needs_the_admin_scope(replicas: Cluster) -> None:
    from mlx_platform.server.auth import create_token

    reader = create_token(
        replicas.settings["MLX_JWT_SECRET"], "reader", ["plugins:read"], ttl_seconds=600
    )
    with replicas.client(1, reader) as client:
        assert_error(client.get("/v1/nodes"), 403, "FORBIDDEN")
    with replicas.client(2, "") as anonymous:
        assert_error(anonymous.get("/v1/nodes"), 401, "UNAUTHORIZED")


def test_replicas_started_together_share_one_catalogue(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    # The example plugins were seeded once, though three services started on the empty
    # database at the same moment.
    listed = clients[0].get("/v1/plugins", params={"limit": 100}).json()["data"]
    keys = [(p["name"], p["version"]) for p in listed]
    assert len(keys) == len(set(keys)), f"registered twice: {sorted(keys)}"

    plugin = track(replicas, register(clients[2], unique_name))
    for client in clients:
        assert detail(client, plugin)["status"] == "registered"
    dup = clients[1].post(
        "/v1/plugins",
        json={
            "name": unique_name,
            "type": "data_source",
            "version": "1.0.0",
            "class_path": "mlx_test_plugins.EchoPlugin",
        },
    )
    assert_error(dup, 409, "PLUGIN_ALREADY_EXISTS")


# ================================================================ changes reach every replica


def test_an_activation_through_one_replica_runs_the_plugin_on_every_replica_within_1s(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = track(replicas, register(clients[0], unique_name, class_path=PROBE))

    r = activate(clients[1], plugin)
    t0 = time.monotonic()

    assert r.headers["x-mlx-node"] == replicas.node_ids[1]
    pids: dict[int, int] = {}

    def runs(i: int) -> bool:
        pid = running_pid(replicas, clients[i], i, plugin)
        if pid is not None:
            pids[i] = pid
        return pid is not None

    times = until_everywhere(REPLICAS, runs, t0, what="the activated plugin served")
    assert_live_within_limit(times, "activation")
    assert len(set(pids.values())) == REPLICAS, pids

    # Health: answered for the replica asked, with every live replica's view.
    by_pid = {replicas.node_ids[i]: pid for i, pid in pids.items()}
    for i, client in enumerate(clients):

        def view(client: httpx.Client = client) -> dict[str, Any]:
            resp = health_answer(client, plugin)
            return {"header": resp.headers["x-mlx-node"], **resp.json()["data"]}

        data, _ = poll(
            view,
            lambda d: (
                {str(v["node_id"]): v.get("pid") for v in d["replicas"]} == by_pid
                and all(v["state"] == "running" for v in d["replicas"])
            ),
            timeout=5,
            what=f"health through replica {i} lists the three running instances",
        )
        assert data["node_id"] == replicas.node_ids[i] == data["header"]
        assert data["plugin_id"] == plugin
        assert data["status"] == "healthy", data
        for v in data["replicas"]:
            assert {
                "node_id",
                "state",
                "pid",
                "health_status",
                "message",
                "last_check",
                "config_version",
                "last_error",
            } <= set(v), v
            assert v["state"] in INSTANCE_STATES
            assert v["last_error"] is None, v
        assert len({v["config_version"] for v in data["replicas"]}) == 1, data["replicas"]

    # Nodes: each lists its instance of the plugin.
    for node in nodes(clients[2]):
        [inst] = [x for x in node["instances"] if x["plugin_id"] == plugin]
        assert {
            "plugin_id",
            "state",
            "pid",
            "generation",
            "config_version",
            "health_status",
            "last_error",
        } <= set(inst), inst
        assert inst["state"] == "running", (node["id"], inst)
        assert inst["pid"] == by_pid[node["id"]], (node["id"], inst)

    for client in clients:
        assert detail(client, plugin)["status"] == "active"
        active = client.get("/v1/plugins", params={"status": "active", "limit": 100})
        assert plugin in [p["id"] for p in active.json()["data"]]
    assert_each_plugin_runs_once_per_replica(replicas, clients[0])


SCHEMA = {
    "greeting": {"type": "string", "default": "hello"},
    "pool_size": {"type": "integer", "default": 1, "hot_reload": False},
}


def test_a_hot_configuration_change_through_one_replica_is_live_everywhere_within_1s(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = track(
        replicas, register(clients[0], unique_name, class_path=PROBE, configuration_schema=SCHEMA)
    )
    activate(clients[0], plugin)
    pids = pids_everywhere(replicas, clients, plugin)
    before = replica_views(clients[0], plugin)

    r = clients[2].patch(
        f"/v1/plugins/{plugin}/configuration", json={"configuration": {"greeting": "hi"}}
    )
    t0 = time.monotonic()

    assert r.status_code == 200, r.text
    assert r.json()["data"]["restart_required"] is False
    times = until_everywhere(
        REPLICAS,
        lambda i: call(clients[i], plugin, "config_value", key="greeting") == "hi",
        t0,
        what="greeting == 'hi'",
    )
    assert_live_within_limit(times, "hot configuration change")
    for i in range(REPLICAS):
        assert running_pid(replicas, clients[i], i, plugin) == pids[i], "not the same worker"
    old_version = max(v["config_version"] for v in before.values())
    views, _ = poll(
        lambda: replica_views(clients[1], plugin),
        lambda vs: (
            all_running(replicas, vs)
            and all(v["config_version"] > old_version for v in vs.values())
        ),
        timeout=5,
        what="every replica reports the new config_version",
    )
    assert len({v["config_version"] for v in views.values()}) == 1, views


def test_a_cold_configuration_change_restarts_every_replicas_worker_only_when_allowed(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = track(
        replicas, register(clients[0], unique_name, class_path=PROBE, configuration_schema=SCHEMA)
    )
    activate(clients[2], plugin)
    pids = pids_everywhere(replicas, clients, plugin)

    refused = clients[0].patch(
        f"/v1/plugins/{plugin}/configuration",
        json={"configuration": {"pool_size": 4}, "restart_required": False},
    )

    assert refused.status_code == 200, refused.text
    assert refused.json()["data"]["restart_required"] is True
    assert refused.json()["data"]["restarted"] is False
    # Watch every replica for longer than the promise: no restart, the old value stays.
    holds(
        lambda: [
            (
                running_pid(replicas, clients[i], i, plugin),
                call(clients[i], plugin, "config_value", key="pool_size"),
            )
            for i in range(REPLICAS)
        ],
        lambda seen: seen == [(pids[i], 1) for i in range(REPLICAS)],
        seconds=LIVE_LIMIT_S + LIVE_ALLOWANCE_S,
        what="each replica's (worker pid, pool_size)",
    )

    allowed = clients[1].patch(
        f"/v1/plugins/{plugin}/configuration",
        json={"configuration": {"pool_size": 5}, "restart_required": True},
    )
    t0 = time.monotonic()

    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["data"]["restarted"] is True
    new_pids: dict[int, int] = {}

    def restarted(i: int) -> bool:
        pid = running_pid(replicas, clients[i], i, plugin)
        if pid is None or pid == pids[i]:
            return False
        if call(clients[i], plugin, "config_value", key="pool_size") != 5:
            return False
        new_pids[i] = pid
        return True

    times = until_everywhere(REPLICAS, restarted, t0, what="a new worker with pool_size 5")
    assert_live_within_limit(times, "cold configuration change with restart")
    took = wait_all_gone(list(pids.values()), ORPHAN_LIMIT_S, "the old workers ended")
    assert took <= ORPHAN_LIMIT_S
    for client in clients:
        assert detail(client, plugin)["status"] == "active"
    _, _ = poll(
        lambda: replica_views(clients[0], plugin),
        lambda vs: (
            all_running(replicas, vs) and {v["pid"] for v in vs.values()} == set(new_pids.values())
        ),
        timeout=5,
        what="every replica reports its new worker running",
    )


def test_a_deactivation_through_one_replica_stops_every_replicas_worker_within_1s(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = track(replicas, register(clients[1], unique_name, class_path=PROBE))
    activate(clients[0], plugin)
    pids = pids_everywhere(replicas, clients, plugin)

    r = clients[2].post(f"/v1/plugins/{plugin}/deactivate", json={})
    t0 = time.monotonic()

    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "inactive"

    def refused(i: int) -> bool:
        resp = invoke(clients[i], plugin, "pid")
        if resp.status_code == 200:
            return False
        assert_error(resp, 409, "INVALID_STATE")
        return True

    times = until_everywhere(REPLICAS, refused, t0, what="invocations refused")
    assert_live_within_limit(times, "deactivation")
    wait_all_gone(list(pids.values()), ORPHAN_LIMIT_S, "every replica's worker ended")
    for client in clients:
        assert detail(client, plugin)["status"] == "inactive"
    views = replica_views(clients[0], plugin)
    assert all(v["state"] != "running" for v in views.values()), views


def test_a_delete_through_one_replica_removes_the_plugin_and_its_workers_everywhere(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = register(clients[0], unique_name, class_path=PROBE)
    activate(clients[0], plugin)
    pids = pids_everywhere(replicas, clients, plugin)

    r = clients[1].delete(f"/v1/plugins/{plugin}", params={"force": "true"})
    t0 = time.monotonic()

    assert r.status_code == 200, r.text
    assert r.json()["data"]["deleted"] is True

    def unknown(i: int) -> bool:
        resp = invoke(clients[i], plugin, "pid")
        if resp.status_code == 200:
            return False
        assert_error(resp, 404, "PLUGIN_NOT_FOUND")
        assert_error(clients[i].get(f"/v1/plugins/{plugin}"), 404, "PLUGIN_NOT_FOUND")
        return True

    times = until_everywhere(REPLICAS, unknown, t0, what="the plugin unknown")
    assert_live_within_limit(times, "delete")
    wait_all_gone(list(pids.values()), ORPHAN_LIMIT_S, "every replica's worker ended")
    # A replica drops its instance's row once its worker has stopped (after the worker's end,
    # not with it): the view is polled, with the worker's own limit.
    poll(
        lambda: [
            n["id"] for n in nodes(clients[2]) if plugin in [x["plugin_id"] for x in n["instances"]]
        ],
        lambda listing: not listing,
        timeout=ORPHAN_LIMIT_S,
        what="no replica lists the deleted plugin's instance",
    )


def test_an_active_plugin_that_no_live_replica_runs_shows_error_with_the_reason(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "crash-on-start"
    plugin = track(replicas, register(clients[0], unique_name, class_path=CRASH_ON_START))
    activate(clients[0], plugin, {"crash_marker": str(marker)})
    pids = pids_everywhere(replicas, clients, plugin)
    marker.write_text("every start fails while this file exists")

    try:
        # Its worker ends on replicas 0 and 1 (their restarts fail): replica 2 still runs it,
        # so it is active.
        for i in (0, 1):
            assert invoke(clients[i], plugin, "exit_now", code=9).status_code == 424
        poll(
            lambda: replica_views(clients[2], plugin),
            lambda vs: all(vs[replicas.node_ids[i]]["state"] != "running" for i in (0, 1)),
            timeout=5,
            what="replicas 0 and 1 report their instance not running",
        )
        for client in clients:
            assert detail(client, plugin)["status"] == "active"
        assert running_pid(replicas, clients[2], 2, plugin) == pids[2]

        # ... and on replica 2 too: no live replica runs it.
        assert invoke(clients[2], plugin, "exit_now", code=9).status_code == 424
        t0 = time.monotonic()

        def shows_error(i: int) -> bool:
            d = detail(clients[i], plugin)
            return d["status"] == "error" and bool(d["status_reason"])

        until_everywhere(REPLICAS, shows_error, t0, timeout=5, what="status error")
        reason = str(detail(clients[1], plugin)["status_reason"])
        assert len(reason) > 10, reason
        in_error = clients[0].get("/v1/plugins", params={"status": "error", "limit": 100})
        assert plugin in [p["id"] for p in in_error.json()["data"]]
        active = clients[0].get("/v1/plugins", params={"status": "active", "limit": 100})
        assert plugin not in [p["id"] for p in active.json()["data"]]
        for v in replica_views(clients[0], plugin).values():
            assert v["state"] in {"restarting", "error", "starting"}, v
    finally:
        marker.unlink()

    # The next restart succeeds on every replica: active again, served everywhere.
    pids_everywhere(replicas, clients, plugin, timeout=20)
    for client in clients:
        assert detail(client, plugin)["status"] == "active"


# ================================================================ conflicts across replicas


def test_concurrent_activations_of_conflicting_plugins_over_replicas_leave_one_active(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    """Each round: 20 concurrent activations of two experiment trackers (singleton type) and
    20 of two data sources whose `conflicts_with` names each other, all 40 at once, spread
    over the three replicas. Exactly one of each pair ends active; every request of the other
    one loses with 409 PLUGIN_CONFLICT; the winner's extra requests find it active (409
    INVALID_STATE); never a 5xx."""
    per_plugin = 10
    rounds = 3
    # Every round's four plugins, registered up front (concurrently, over the replicas).
    bodies: dict[tuple[int, str], dict[str, Any]] = {}
    for rnd in range(rounds):
        name = {k: f"{unique_name}_r{rnd}_{k}" for k in ("ta", "tb", "da", "db")}
        bodies[rnd, "ta"] = {"type": "experiment_tracker"}
        bodies[rnd, "tb"] = {"type": "experiment_tracker"}
        bodies[rnd, "da"] = {"metadata": {"conflicts_with": [name["db"]]}}
        bodies[rnd, "db"] = {"metadata": {"conflicts_with": [name["da"]]}}
    with ThreadPoolExecutor(4) as pool:
        registered = dict(
            zip(
                bodies,
                pool.map(
                    lambda item: register(
                        clients[item[0] % REPLICAS],
                        f"{unique_name}_r{item[1][0]}_{item[1][1]}",
                        **bodies[item[1]],
                    ),
                    enumerate(bodies),
                ),
                strict=True,
            )
        )
    for plugin_id in registered.values():
        track(replicas, plugin_id)

    for rnd in range(rounds):
        names = {k: f"{unique_name}_r{rnd}_{k}" for k in ("ta", "tb", "da", "db")}
        ids = {k: registered[rnd, k] for k in names}
        groups = [("ta", "tb"), ("da", "db")]
        order = [k for pair in groups for k in pair] * per_plugin
        barrier = threading.Barrier(len(order))
        answers: list[tuple[str, int, int, dict[str, Any]]] = []
        lock = threading.Lock()

        def fire(
            n: int,
            key: str,
            ids: dict[str, str],
            barrier: threading.Barrier,
            answers: list[tuple[str, int, int, dict[str, Any]]],
            lock: threading.Lock,
        ) -> None:
            i = n % REPLICAS
            with replicas.client(i) as client:
                barrier.wait(timeout=60)
                r = client.post(f"/v1/plugins/{ids[key]}/activate", json={})
                with lock:
                    answers.append((key, i, r.status_code, r.json()))

        threads = [
            threading.Thread(target=fire, args=(n, k, ids, barrier, answers, lock))
            for n, k in enumerate(order)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert len(answers) == len(order), f"round {rnd}: {len(answers)} answers"
        server_errors = [a for a in answers if a[2] >= 500]
        assert not server_errors, f"round {rnd}: {server_errors[:3]}"

        for a, b in groups:
            states = {k: detail(clients[rnd % REPLICAS], ids[k])["status"] for k in (a, b)}
            assert sorted(states.values()) == ["active", "registered"], (rnd, states)
            winner = a if states[a] == "active" else b
            loser = b if winner == a else a
            mine = [(s, body) for k, _, s, body in answers if k == winner]
            assert sorted(s for s, _ in mine) == [200] + [409] * (per_plugin - 1), (rnd, mine)
            for s, body in mine:
                if s == 409:
                    assert body["error"]["code"] == "INVALID_STATE", (rnd, body)
            for k, i, s, body in answers:
                if k != loser:
                    continue
                assert s == 409, (rnd, i, body)
                assert body["error"]["code"] == "PLUGIN_CONFLICT", (rnd, i, body)
                assert body["error"]["details"]["conflicting_plugin"] == names[winner]
            for client in clients:  # every replica sees the same outcome
                assert detail(client, ids[winner])["status"] == "active"
                assert detail(client, ids[loser])["status"] == "registered"
            # The winner runs on every replica, the loser on none.
            poll(
                lambda w=ids[winner]: replica_views(clients[0], w),
                lambda vs: all_running(replicas, vs),
                timeout=10,
                what=f"round {rnd}: the winner runs on every replica",
            )
            for node in nodes(clients[1]):
                assert not [
                    x
                    for x in node["instances"]
                    if x["plugin_id"] == ids[loser] and x["state"] == "running"
                ], node

        assert_each_plugin_runs_once_per_replica(replicas, clients[rnd % REPLICAS])
        for a, b in groups:  # free the slot for the next round
            for k in (a, b):
                if detail(clients[0], ids[k])["status"] == "active":
                    r = clients[rnd % REPLICAS].post(
                        f"/v1/plugins/{ids[k]}/deactivate", json={"force": True}
                    )
                    assert r.status_code == 200, r.text


# ================================================================ metrics across replicas


def test_invocations_through_every_replica_are_counted_exactly(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    plugin = track(replicas, register(clients[0], unique_name))
    activate(clients[1], plugin)
    sent = {0: 9, 1: 14, 2: 20}
    # Wait (without invoking) until every replica runs it.
    poll(
        lambda: replica_views(clients[0], plugin),
        lambda vs: all_running(replicas, vs),
        timeout=15,
        what="every replica runs the plugin",
    )
    failures: list[str] = []

    def send(i: int) -> None:
        with replicas.client(i) as client:
            for n in range(sent[i]):
                r = invoke(client, plugin, "add", a=n, b=i)
                if r.status_code != 200 or r.json()["data"]["result"] != n + i:
                    failures.append(f"replica {i}: {r.status_code} {r.text[:200]}")
                if r.headers.get("x-mlx-node") != replicas.node_ids[i]:
                    failures.append(f"replica {i}: answered by {r.headers.get('x-mlx-node')}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(REPLICAS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    t_sent = time.monotonic()
    assert not failures, failures[:5]
    total = sum(sent.values())

    def count(client: httpx.Client) -> int:
        r = client.get(f"/v1/plugins/{plugin}/metrics")
        assert r.status_code == 200, r.text
        n = int(r.json()["data"]["metrics"]["execution_count"])
        assert n <= total, f"counted {n} invocations, {total} were sent"
        return n

    # Every replica counts its own calls at once and the others' once they have flushed
    # them: the last replica to flush decides when every count is whole.
    _, took = poll(
        lambda: [count(client) for client in clients],
        lambda counts: counts == [total] * len(clients),
        timeout=METRICS_FLUSH_S + 5,
        interval=0.25,
        what=f"execution_count == {total} through each replica",
    )
    assert time.monotonic() - t_sent <= METRICS_FLUSH_S + 3, "not within a flush interval"
    # Through every replica, and still exact after every replica flushed again.
    holds(
        lambda: [count(client) for client in clients],
        lambda counts: counts == [total] * len(clients),
        seconds=METRICS_FLUSH_S + 0.5,
        interval=0.5,
        what="execution_count through each replica",
    )
    r = clients[2].get(f"/v1/plugins/{plugin}/metrics")
    metrics = r.json()["data"]["metrics"]
    assert metrics["error_count"] == 0, metrics


# ================================================================ resources per replica


def test_cpu_cores_are_a_per_replica_minimum_not_a_sum(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    """Every replica has 2 cores (MLX_CAPACITY_CPU_CORES=2); three plugins claiming one core
    each all run on every replica; one claiming 3 cores fits nowhere."""
    plugins = [
        track(
            replicas,
            register(
                clients[i], f"{unique_name}_{i}", class_path=PROBE, metadata={"min_cpu_cores": 1}
            ),
        )
        for i in range(3)
    ]
    for i, plugin in enumerate(plugins):
        activate(clients[i], plugin)
    for plugin in plugins:
        pids_everywhere(replicas, clients, plugin)
        for client in clients:
            assert detail(client, plugin)["status"] == "active"

    too_big = track(
        replicas,
        register(clients[0], f"{unique_name}_big", class_path=PROBE, metadata={"min_cpu_cores": 3}),
    )
    err = assert_error(
        clients[1].post(f"/v1/plugins/{too_big}/activate", json={}), 409, "INSUFFICIENT_RESOURCES"
    )
    assert "cpu_cores" in str(err["details"]), err


# ================================================================ crashes


def test_a_replica_killed_mid_activation_comes_back_clean_and_the_others_keep_serving(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str, tmp_path: Path
) -> None:
    victim = 2
    others = [0, 1]
    bystander = track(replicas, register(clients[0], f"{unique_name}_bystander", class_path=PROBE))
    activate(clients[0], bystander)
    bystander_pids = pids_everywhere(replicas, clients, bystander)

    start_log = tmp_path / "starts"
    slow = track(replicas, register(clients[0], f"{unique_name}_slow", class_path=SLOW_START))
    victim_pid = replicas.pid(victim)
    victim_node = replicas.node_ids[victim]
    keep = [KeepCalling(replicas.client(i), bystander) for i in others]
    for k in keep:
        k.start()

    config = {"start_log": str(start_log), "start_delay": 3}
    activation = InBackground(
        lambda: clients[victim].post(f"/v1/plugins/{slow}/activate", json={"configuration": config})
    )
    activation.start()

    # Mid-activation: the victim's own worker for the slow plugin is inside start().
    def victim_starting() -> list[int]:
        logged = start_log.read_text().split() if start_log.exists() else []
        return [p for p in worker_children(victim_pid) if str(p) in logged]

    poll(victim_starting, bool, timeout=15, what="the victim's worker is in start()")
    assert activation.is_alive(), "the activation answered before the replica was killed"
    old_workers = worker_children(victim_pid)
    assert bystander_pids[victim] in old_workers

    replicas.kill(victim)
    t_kill = time.monotonic()

    activation.join(30)
    took = wait_all_gone(old_workers, ORPHAN_LIMIT_S, "the killed replica's workers ended")
    assert took <= ORPHAN_LIMIT_S

    # The others run the slow plugin (its desired state is active) and forget the dead node.
    for i in others:
        poll(
            lambda i=i: running_pid(replicas, clients[i], i, slow),
            lambda pid: pid is not None,
            timeout=15,
            what=f"replica {i} serves the plugin whose activation's replica died",
        )
        assert detail(clients[i], slow)["status"] == "active"

    def dead_node_gone() -> list[dict[str, Any]]:
        return [n for n in nodes(clients[0]) if n["pid"] == victim_pid or n["id"] == victim_node]

    _, _ = poll(dead_node_gone, lambda left: not left, timeout=DEAD_AFTER_S + 7, what="dead node")
    gone_after = time.monotonic() - t_kill
    assert gone_after <= DEAD_AFTER_S + 3, f"dead node removed {gone_after:.2f} s after SIGKILL"
    views = replica_views(clients[1], bystander)
    assert set(views) == {replicas.node_ids[i] for i in others}, views

    answers = [k.finish() for k in keep]
    for i, got in zip(others, answers, strict=True):
        assert len(got) >= 5, got
        bad = [a for a in got if a[0] != 200]
        assert not bad, f"replica {i} failed while another replica died: {bad[:3]}"
        assert {a[1]["data"]["result"] for a in got} == {bystander_pids[i]}

    # Start the victim again: same MLX_HOME, same database.
    replicas.restart(victim)
    with replicas.client(victim) as vc:
        clients_now = [clients[0], clients[1], vc]
        for plugin in (bystander, slow):
            pid = poll(
                lambda plugin=plugin: running_pid(replicas, vc, victim, plugin),
                lambda p: p is not None,
                timeout=20,
                what="the restarted replica serves the plugin",
            )[0]
            assert pid not in old_workers
        for plugin in (bystander, slow):
            views, _ = poll(
                lambda plugin=plugin: replica_views(clients_now[0], plugin),
                lambda vs: all_running(replicas, vs),
                timeout=15,
                what="every replica reports the plugin running (nothing stuck)",
            )
            for client in clients_now:
                assert detail(client, plugin)["status"] == "active"

        # Nothing runs twice on the restarted replica (nor on the others): the workers of each
        # are exactly its running instances, one per plugin.
        assert_each_plugin_runs_once_per_replica(replicas, vc)
        # The slow plugin started once per replica, plus once in the restarted replica.
        starts = start_log.read_text().split()
        assert len(starts) == REPLICAS + 1, f"expected 4 starts: {starts}"
        listed = nodes(vc)
        assert len(listed) == REPLICAS and all(n["alive"] for n in listed), listed


def test_a_replica_restarted_with_a_slow_plugin_is_never_taken_for_dead_once_it_answers(
    replicas: Cluster, clients: list[httpx.Client], unique_name: str
) -> None:
    """A rolling restart: one replica stops (SIGTERM) and starts again while a plugin whose
    start() takes 4 s (longer than MLX_NODE_DEAD_AFTER, 3 s here) is active. The others serve
    it throughout; once the replica answers again it runs the plugin, and from then on the
    others list it alive and show its instance running at every look (a replica that answers
    is not dead)."""
    victim = 1
    slow = track(replicas, register(clients[0], unique_name, class_path=SLOW_START))
    activate(clients[0], slow, {"start_delay": 4})
    pids_everywhere(replicas, clients, slow, timeout=20)
    old_id = replicas.node_ids[victim]
    keep = KeepCalling(replicas.client(0), slow)
    keep.start()

    replicas.servers[victim].stop()
    # A clean shutdown leaves at once; the plugin is still active: the others run it.
    poll(
        lambda: [n["id"] for n in nodes(clients[0])],
        lambda ids: old_id not in ids,
        timeout=DEAD_AFTER_S,
        what="the stopped replica left the nodes",
    )
    for i in (0, 2):
        assert detail(clients[i], slow)["status"] == "active"

    # Start it again, and watch the nodes through replica 0 all along: from the moment the new
    # replica is listed, through its start (4 s in the plugin's start()), and for longer than
    # MLX_NODE_DEAD_AFTER after it answers.
    others = {replicas.node_ids[i] for i in (0, 2)}
    restart = threading.Thread(target=replicas.restart, args=(victim,), daemon=True)
    restart.start()
    seen: dict[str, list[tuple[float, str]]] = {}  # new node id -> (time, what was seen)
    gaps: list[str] = []
    t0 = time.monotonic()
    t_ready: float | None = None
    new_id = ""
    while t_ready is None or time.monotonic() - t_ready < DEAD_AFTER_S + 1:
        assert time.monotonic() - t0 < 90, "the replica did not start again"
        if t_ready is None and not restart.is_alive():
            t_ready = time.monotonic()
            new_id = replicas.node_ids[victim]
        t = time.monotonic() - t0
        listed = {n["id"]: n for n in nodes(clients[0])}
        for nid in (set(listed) - others - {old_id}) | set(seen):
            state = "absent" if nid not in listed else f"alive={listed[nid]['alive']}"
            seen.setdefault(nid, []).append((t, state))
        if t_ready is not None:
            views = replica_views(clients[2], slow)
            if new_id not in views:
                gaps.append(f"{t:.2f} s: no view in health replicas")
            elif views[new_id]["state"] != "running":
                gaps.append(f"{t:.2f} s: view state {views[new_id]['state']}")
        time.sleep(0.05)
    assert t_ready is not None
    ready_at = t_ready - t0
    assert new_id in seen, f"the restarted replica {new_id} was never listed: {seen}"
    trail = seen[new_id]
    first = next(t for t, state in trail if state == "alive=True")
    gaps = [
        f"{t:.2f} s: {state} in /v1/nodes"
        for t, state in trail
        if t > first and state != "alive=True"
    ] + gaps
    assert not gaps, (
        f"the restarting replica {new_id} (listed from {first:.2f} s, answering from "
        f"{ready_at:.2f} s) was taken for dead by the others: {gaps[:10]}\n"
        + replicas.log_lines("joined", "dead", "heartbeat", "ready")
    )
    with replicas.client(victim) as vc:
        assert running_pid(replicas, vc, victim, slow) is not None, (
            "the restarted replica answers but does not serve the active plugin"
        )
    answers = keep.finish()
    bad = [a for a in answers if a[0] != 200]
    assert not bad, f"replica 0 failed while replica {victim} restarted: {bad[:3]}"


def test_the_only_replica_killed_during_a_restart_delay_runs_the_plugin_after_its_restart(
    fresh_database: str, tmp_path: Path, unique_name: str
) -> None:
    settings = {
        "MLX_DATABASE_URL": fresh_database,
        **shared_secrets(),
        "MLX_SEED_BUILTIN_PLUGINS": "false",
        "MLX_RESTART_BACKOFF_BASE": "30",
        "MLX_RESTART_BACKOFF_CAP": "30",
        "MLX_NODE_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
        "MLX_NODE_DEAD_AFTER": str(DEAD_AFTER_S),
    }
    home = tmp_path / "only"
    first = start_server(home, **settings)
    second: LiveServer | None = None
    try:
        with first.client(first.admin_token) as client:
            plugin = register(client, unique_name, class_path=PROBE)
            activate(client, plugin)
            old_pid = int(call(client, plugin, "pid"))
            assert invoke(client, plugin, "exit_now", code=5).status_code == 424
            poll(
                lambda: detail(client, plugin)["status"],
                lambda s: s == "error",
                timeout=5,
                what="status error while the restart waits 30 s",
            )
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(30)

        second = start_server(home, **settings)
        t0 = time.monotonic()
        with second.client(second.admin_token) as client:
            d, _ = poll(
                lambda: detail(client, plugin),
                lambda d: d["status"] == "active",
                timeout=15,
                what="active again after the service restarted (not 30 s later)",
            )
            assert time.monotonic() - t0 < 20
            new_pid = int(call(client, plugin, "pid"))
            assert new_pid != old_pid
            assert parent_of(new_pid) == second.process.pid
            assert call(client, plugin, "echo", value="back") == "back"
            assert process_gone(old_pid)
            listed, _ = poll(
                lambda: nodes(client),
                lambda ns: len(ns) == 1,
                timeout=DEAD_AFTER_S + 7,
                what="only the live replica is listed",
            )
            assert listed[0]["pid"] == second.process.pid and listed[0]["this_node"] is True
            assert worker_children(second.process.pid) == [new_pid]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_the_restart_budget_resets_after_the_plugin_ran_healthily_for_the_reset_time(
    fresh_database: str, tmp_path: Path, unique_name: str
) -> None:
    """One restart allowed (MLX_MAX_RESTARTS=1), forgotten after 2 s of healthy running
    (MLX_RESTART_BUDGET_RESET=2): a plugin that crashes twice in a row gives up; one that
    crashes, runs 2.5 s, then crashes again is restarted both times."""
    server = start_server(
        tmp_path / "budget",
        MLX_DATABASE_URL=fresh_database,
        MLX_SEED_BUILTIN_PLUGINS="false",
        MLX_MAX_RESTARTS="1",
        MLX_RESTART_BUDGET_RESET="2",
        MLX_RESTART_BACKOFF_BASE="0.1",
        MLX_RESTART_BACKOFF_CAP="0.1",
        MLX_HEALTH_INTERVAL="0.5",
    )
    try:
        with server.client(server.admin_token) as client:
            patient = register(client, f"{unique_name}_patient", class_path=PROBE)
            hasty = register(client, f"{unique_name}_hasty", class_path=PROBE)
            activate(client, patient)
            activate(client, hasty)
            first = {p: int(call(client, p, "pid")) for p in (patient, hasty)}

            for p in (patient, hasty):
                assert invoke(client, p, "exit_now", code=4).status_code == 424

            def new_worker(p: str, old: int) -> int | None:
                if detail(client, p)["status"] != "active":
                    return None
                r = invoke(client, p, "pid")
                pid = int(r.json()["data"]["result"]) if r.status_code == 200 else None
                return pid if pid != old else None

            second = {}
            for p in (patient, hasty):
                second[p] = poll(
                    lambda p=p: new_worker(p, first[p]),
                    lambda pid: pid is not None,
                    timeout=10,
                    what="restarted once",
                )[0]
            t_back = time.monotonic()

            # hasty crashes again at once: its one restart is spent, it stays in error.
            assert invoke(client, hasty, "exit_now", code=4).status_code == 424
            gave_up, _ = poll(
                lambda: detail(client, hasty),
                lambda d: d["status"] == "error" and "gave up" in str(d["status_reason"]).lower(),
                timeout=10,
                what="the supervisor gives up on the plugin that crashed twice in a row",
            )

            # patient runs healthily for longer than the reset time, then crashes again.
            holds(
                lambda: (detail(client, patient)["status"], int(call(client, patient, "pid"))),
                lambda seen: seen == ("active", second[patient]),
                seconds=max(0.0, 2.5 - (time.monotonic() - t_back)),
                interval=0.25,
                what="patient active in its second worker",
            )
            assert detail(client, patient)["health"]["status"] == "healthy"
            assert invoke(client, patient, "exit_now", code=4).status_code == 424
            third = poll(
                lambda: new_worker(patient, second[patient]),
                lambda pid: pid is not None,
                timeout=10,
                what="restarted again: the budget was reset by 2.5 s of healthy running",
            )[0]
            assert parent_of(third) == server.process.pid
            assert detail(client, patient)["status"] == "active"
            assert detail(client, hasty)["status"] == "error"
    finally:
        server.stop()
