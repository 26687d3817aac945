"""Change propagation across replicas (issue 10): three `mlx serve` on one PostgreSQL database;
a configuration change made through one replica, timed until each of the other two runs it.
Baseline, in the same run: a bare PostgreSQL LISTEN/NOTIFY round trip, the floor of anything
that travels through the database."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import Figure, free_port, log_tail, percentile

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PLUGINS = ROOT / "tests" / "fixtures" / "plugin_pkgs"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"

REPLICAS = 3
ROUNDS = 60
POLL_EVERY = 0.005  # seconds between two looks at a replica
CAP = 5.0  # seconds; a replica that has not shown a change by then counts as CAP
GIVE_UP_AFTER = 10  # rounds: when every sample of the first ones hit CAP, stop there
NOTIFY_TRIPS = 200
TARGET_P99_MS = 1000.0  # issue 10
# p50: well under the 1 s safety-net poll of the reconcilers (MLX_RECONCILE_INTERVAL), whose
# half-interval (~500 ms) is what the median would be if a change travelled only by polling;
# at most 250 ms means changes travel by NOTIFY.
TARGET_P50_MS = 250.0
BASELINE_NAME = "(bare LISTEN/NOTIFY round trip)"


def _log(message: str) -> None:
    print(f"bench_replicas: {message}", file=sys.stderr, flush=True)


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def notify_round_trip_ms(dbname: str, trips: int = NOTIFY_TRIPS) -> float:
    """Median time (ms) from a NOTIFY sent in a committed transaction on one connection until
    another connection, LISTENing, has it."""
    import psycopg

    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}"
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn) as notifier,
    ):
        listener.execute("LISTEN mlxbench")
        samples = []
        for i in range(trips + 20):
            t0 = time.perf_counter()
            notifier.execute("SELECT pg_notify('mlxbench', %s)", (str(i),))
            notifier.commit()
            got = [n.payload for n in listener.notifies(timeout=CAP, stop_after=1)]
            elapsed = time.perf_counter() - t0
            if got != [str(i)]:
                raise RuntimeError(f"NOTIFY {i} not delivered (got {got})")
            if i >= 20:  # the first ones warm up
                samples.append(elapsed * 1000)
    return statistics.median(samples)


@dataclass
class Replica:
    name: str
    url: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_replicas(tmp: Path, database_url: str, started: list[Replica]) -> None:
    """Start REPLICAS servers at the same moment (appended to `started` as they are spawned, so
    that the caller stops them whatever happens), then wait for /healthz on each."""
    from cryptography.fernet import Fernet

    shared = {
        "MLX_DATABASE_URL": database_url,
        "MLX_JWT_SECRET": secrets.token_urlsafe(48),
        "MLX_SECRET_KEY": Fernet.generate_key().decode(),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    base["PYTHONPATH"] = os.pathsep.join([str(FIXTURE_PLUGINS), base.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    for i in range(REPLICAS):
        name = "ABCDEFGH"[i]
        home = tmp / f"home{name}"
        home.mkdir()
        env = {**base, **shared, "MLX_HOME": str(home)}
        port = free_port()
        log = tmp / f"replica{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlx_platform.cli.main", "serve"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started.append(Replica(name, f"http://127.0.0.1:{port}", env, log, proc))
    deadline = time.monotonic() + 90
    waiting = list(started)
    while waiting:
        for rep in list(waiting):
            if rep.process.poll() is not None:
                raise RuntimeError(
                    f"replica {rep.name} exited with {rep.process.returncode}:\n{rep.log_tail()}"
                )
            try:
                if httpx.get(f"{rep.url}/healthz", timeout=2).status_code == 200:
                    waiting.remove(rep)
            except httpx.TransportError:
                pass
        if waiting and time.monotonic() > deadline:
            names = ", ".join(r.name for r in waiting)
            raise RuntimeError(f"replica(s) {names} not ready in 90 s:\n{waiting[0].log_tail()}")
        time.sleep(0.05)


def admin_token(replica: Replica) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mlx_platform.cli.main", "token", "create"]
        + ["--subject", "bench", "--scope", "plugins:admin", "--ttl", "7200"],
        env=replica.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def _value_on(client: httpx.Client, plugin_id: str) -> object:
    """What `n` the replica's instance runs with; a sentinel when it cannot say."""
    try:
        r = client.post(
            f"/v1/plugins/{plugin_id}/invoke",
            json={"operation": "config_value", "arguments": {"key": "n"}},
        )
    except httpx.HTTPError:
        return _UNAVAILABLE
    if r.status_code != 200:
        return _UNAVAILABLE
    return r.json()["data"]["result"]


_UNAVAILABLE = object()


def _time_until(client: httpx.Client, plugin_id: str, want: object, since: float) -> float:
    """Seconds from `since` until the replica answers `want` (at most CAP): the time its answer
    arrived, so one invocation's latency is included, not hidden."""
    while True:
        if _value_on(client, plugin_id) == want:
            return time.perf_counter() - since
        if time.perf_counter() - since >= CAP:
            return CAP
        time.sleep(POLL_EVERY)


def measure(replicas: list[Replica], token: str) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    writers = [httpx.Client(base_url=r.url, headers=headers, timeout=30) for r in replicas]
    readers = [httpx.Client(base_url=r.url, headers=headers, timeout=CAP) for r in replicas]
    pool = ThreadPoolExecutor(max_workers=REPLICAS)
    try:
        a = writers[0]
        r = a.post(
            "/v1/plugins",
            json={
                "name": f"bench_replica_probe_{secrets.token_hex(4)}",
                "type": "data_source",
                "version": "1.0.0",
                "description": "replica propagation benchmark",
                # EchoPlugin.config_snapshot shows the keys only; WorkerProbePlugin tells a value.
                "class_path": "mlx_test_plugins.WorkerProbePlugin",
                "configuration_schema": {
                    "n": {"type": "integer", "default": 0, "hot_reload": True},
                },
                "metadata": {},
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"register through A answered {r.status_code}: {r.text}")
        plugin_id = r.json()["data"]["id"]
        r = a.post(f"/v1/plugins/{plugin_id}/activate", json={"configuration": {"n": 0}})
        if r.status_code != 200:
            raise RuntimeError(f"activate through A answered {r.status_code}: {r.text}")
        t0 = time.perf_counter()
        spread = list(pool.map(lambda c: _time_until(c, plugin_id, 0, t0), readers[1:]))
        _log(
            "activation through A reached "
            + ", ".join(
                f"{rep.name} in {s * 1000:.0f} ms" if s < CAP else f"{rep.name}: not in {CAP:g} s"
                for rep, s in zip(replicas[1:], spread, strict=True)
            )
        )

        samples: list[float] = []
        failed_patches = 0
        gave_up = False
        for n in range(1, ROUNDS + 1):
            w = (n - 1) % REPLICAS
            r = writers[w].patch(
                f"/v1/plugins/{plugin_id}/configuration",
                json={"configuration": {"n": n}, "restart_required": False},
            )
            answered = time.perf_counter()
            others = [readers[i] for i in range(REPLICAS) if i != w]
            if r.status_code != 200:
                failed_patches += 1
                if failed_patches == 1:
                    _log(f"PATCH through {replicas[w].name} answered {r.status_code}: {r.text}")
                samples += [CAP] * len(others)  # the change never got out
                continue
            samples += pool.map(lambda c, n=n, t=answered: _time_until(c, plugin_id, n, t), others)
            if n == GIVE_UP_AFTER and all(s >= CAP for s in samples):
                _log(f"every sample of the first {n} rounds hit the {CAP:g} s cap; stopping")
                gave_up = True
                break
        _log(
            f"{len(samples)} samples, max {max(samples) * 1000:.1f} ms, "
            f"{sum(s > 0.5 for s in samples)} over 500 ms, {sum(s >= CAP for s in samples)} "
            f"at the cap, {failed_patches} PATCH(es) refused"
        )
        if not gave_up:
            lifecycle_check(replicas, writers, readers, pool, plugin_id, last=ROUNDS)
        return [s * 1000 for s in samples]
    finally:
        pool.shutdown(wait=True)
        for c in writers + readers:
            c.close()


def lifecycle_check(
    replicas: list[Replica],
    writers: list[httpx.Client],
    readers: list[httpx.Client],
    pool: ThreadPoolExecutor,
    plugin_id: str,
    *,
    last: int,
    cycles: int = 6,
) -> None:
    """Informational (stderr): deactivate through one replica, then activate through the next,
    timed until the other two stop answering / answer again. Activation includes starting a
    worker process on each replica, so it is not comparable with the configuration figures."""
    down: list[float] = []
    up: list[float] = []
    not_running = 0  # replicas that did not run the plugin before a deactivation: no sample
    for k in range(cycles):
        w = k % REPLICAS
        others = [readers[i] for i in range(REPLICAS) if i != w]
        running = [c for c in others if _value_on(c, plugin_id) == last]
        not_running += len(others) - len(running)
        r = writers[w].post(f"/v1/plugins/{plugin_id}/deactivate", json={})
        t = time.perf_counter()
        if r.status_code != 200:
            _log(f"deactivate through {replicas[w].name} answered {r.status_code}: {r.text}")
            return
        down += pool.map(lambda c, t=t: _time_until(c, plugin_id, _UNAVAILABLE, t), running)
        w = (k + 1) % REPLICAS
        r = writers[w].post(
            f"/v1/plugins/{plugin_id}/activate", json={"configuration": {"n": last}}
        )
        t = time.perf_counter()
        if r.status_code != 200:
            _log(f"activate through {replicas[w].name} answered {r.status_code}: {r.text}")
            return
        others = [readers[i] for i in range(REPLICAS) if i != w]
        up += pool.map(lambda c, t=t: _time_until(c, plugin_id, last, t), others)
    if not_running:
        _log(f"{not_running} time(s) a replica did not run the plugin before a deactivation")
    for what, xs in (("deactivation", down), ("activation", up)):
        if not xs:
            _log(f"{what} propagation: no samples")
            continue
        ms = sorted(x * 1000 for x in xs)
        _log(
            f"{what} propagation over {len(ms)} samples: median {statistics.median(ms):.1f} ms, "
            f"max {ms[-1]:.1f} ms ({sum(x >= CAP for x in xs)} at the {CAP:g} s cap)"
        )


def _figures(p50: float, p99: float, baseline: float | None) -> list[Figure]:
    return [
        Figure("replica_change_propagation_p50", p50, "ms", TARGET_P50_MS, baseline, BASELINE_NAME),
        Figure("replica_change_propagation_p99", p99, "ms", TARGET_P99_MS, baseline, BASELINE_NAME),
    ]


def run() -> list[Figure]:
    import psycopg

    dbname = f"mlxbench_{secrets.token_hex(6)}"
    baseline: float | None = None
    try:
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    except psycopg.Error as exc:
        _log(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc}); figures reported as MISSED")
        return _figures(math.inf, math.inf, None)
    tmp = Path(tempfile.mkdtemp(prefix="mlxbench_replicas_"))
    replicas: list[Replica] = []
    try:
        baseline = notify_round_trip_ms(dbname)
        start_replicas(tmp, f"{PG_URL}/{dbname}", replicas)
        samples = measure(replicas, admin_token(replicas[0]))
        return _figures(percentile(samples, 50), percentile(samples, 99), baseline)
    except Exception:
        _log("failed; figures reported as MISSED:\n" + traceback.format_exc())
        for rep in replicas:
            _log(f"replica {rep.name} log tail:\n{rep.log_tail()}")
        return _figures(math.inf, math.inf, baseline)
    finally:
        for rep in replicas:
            rep.stop()
        try:
            with _pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        except psycopg.Error as exc:
            _log(f"could not drop database {dbname}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for f in run():
        print(f.line())
