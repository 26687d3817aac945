"""The API at catalogue scale (issue 13): `mlx serve` on a database holding 100,000 plugins
(bench/_seed.py), on SQLite and on PostgreSQL, each figure beside its baseline measured in the
same run.

- Throughput and p99 under load: `wrk -t1 -c32 --latency` on the service, then on a bare
  Starlette app answering the very same bytes (bench/bare_app.py: uvicorn, one worker, uvloop,
  httptools, no access log; the baseline of ../shared/tools/api-vs-bare). A wrk run that saw
  non-2xx answers or socket errors counts as failed (throughput 0, latency inf: MISSED), and
  says so on stderr.
- Invoke: POST of a trivial operation (`echo`) of a plugin running in a worker process:
  throughput under wrk beside the bare app; p50 against the GET-one-plugin p50 plus twice the
  worker round trip (measured as bench_runtime.py does), both taken with `wrk -c1` in
  alternating runs (`sequential_pair`): under `-c32` a p50 is the connections over the
  throughput, so it would compare throughputs again.
- Search, filters, deep pages: p50 of one request at a time, from `wrk -t1 -c1` (the client's
  own cost is small: a Python client's was 1-3 ms of each request here), median of 3 runs;
  the first answer, read with httpx, must hold a full page (an empty answer would be fast and
  wrong), every other one must be 200; httpx's own p50 is logged beside it. The LIKE scan
  (`%term%` on name and description, or on the filter's column; first page + COUNT of all
  matches, on the database directly, a scan of the table) is timed in the same run.
- Sorted (issue 15, `sort=name`): page 1 beside page 1 in the default order, and page 4,000
  beside page 1 of the same order, limit 25, one request of each in turn (all three see the
  same machine), each page checked against an ORDER BY of the whole table on the database
  directly (`sorted_pages`).
- Ready: seconds from starting `mlx serve` on the seeded database (already migrated, the
  example plugins registered by a first start made before the bulk load, no plugin active)
  until /readyz answers 200; median of MLX_BENCH_API_STARTS starts; baseline: the same on an
  empty database (after its own first start). Idle memory: RSS of the service and its
  children after the last of those starts and 3 s idle; and again after every measurement
  above, once the echo plugin is deactivated again (its worker process is the plugin's
  memory; the RSS with it running is in the log) and 3 s idle.

Settings (environment): MLX_BENCH_WRK_SECONDS (5), MLX_BENCH_WRK_WARMUP (1; seconds of wrk
before each measured run, not counted), MLX_BENCH_API_REQUESTS (50: httpx requests per
latency figure, logged only), MLX_BENCH_API_STARTS (3),
MLX_BENCH_API_PLUGINS (100000), MLX_BENCH_API_DATABASES ("sqlite,postgresql").
PostgreSQL: 127.0.0.1:5432, user postgres, trust auth; a fresh database per run, dropped.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import Failed, Figure, each_call_us, free_port, log_tail, logger

from mlx_platform.testing.service import terminate

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
FIXTURE_PLUGINS = ROOT / "tests" / "fixtures" / "plugin_pkgs"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"

WRK_SECONDS = int(os.environ.get("MLX_BENCH_WRK_SECONDS", "5"))
WRK_WARMUP = int(os.environ.get("MLX_BENCH_WRK_WARMUP", "1"))
CONNECTIONS = 32
PAIR_ROUNDS = 5  # alternating wrk -c1 runs of a GET and an invocation (api_invoke_p50)
REQUESTS = int(os.environ.get("MLX_BENCH_API_REQUESTS", "50"))
LATENCY_ROUNDS = 3  # wrk -c1 runs per latency figure, alternated with the others of its group
LATENCY_SECONDS = 1
STARTS = int(os.environ.get("MLX_BENCH_API_STARTS", "3"))
PLUGINS = int(os.environ.get("MLX_BENCH_API_PLUGINS", "100000"))
DATABASES = [
    d.strip()
    for d in os.environ.get("MLX_BENCH_API_DATABASES", "sqlite,postgresql").split(",")
    if d.strip()
]
IDLE_S = 3.0
LIKE_REPEATS = 7
PAGE = 20  # limit of the list, search and filter requests
DEEP = (25, PLUGINS // 25)  # limit, page: page 4,000, the last full one of 100,000 plugins

BARE = "(bare Starlette app, same bytes)"
FRESH = {"Cache-Control": "no-cache"}
INVOKE_BODY = '{"operation": "echo", "arguments": {"value": 1}}'


_log = logger("bench_api")


# ---------------------------------------------------------------- wrk


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(out: str) -> Load:
    """wrk's --latency report: Requests/sec, the 50% and 99% latencies; Failed when it saw
    non-2xx answers or socket errors, or printed no result."""
    problems = []
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m and int(m.group(1)):
        problems.append(f"{m.group(1)} non-2xx answers")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m and any(int(x) for x in m.groups()):
        problems.append(m.group(0))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    lat = {
        q: float(v) * _UNITS_MS[u]
        for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    }
    if rps is None or total is None or set(lat) != {"50", "99"}:
        problems.append("no result")
    if problems:
        raise Failed("wrk: " + "; ".join(problems) + "\n" + out.strip())
    assert rps is not None and total is not None
    return Load(float(rps.group(1)), lat["50"], lat["99"], int(total.group(1)))


def wrk(
    url: str, *, headers: list[str], script: Path | None, seconds: int, c: int = CONNECTIONS
) -> Load:
    cmd = ["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script is not None:
        cmd += ["-s", str(script)]
    done = subprocess.run(
        cmd + [url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    return parse_wrk(done.stdout + done.stderr)


class BareKnown(Failed):
    """The service's run failed; the bare app's was measured."""

    def __init__(self, bare: Load, why: str) -> None:
        super().__init__(why)
        self.bare = bare


class BareApp:
    """bench/bare_app.py answering `body`, on a free port."""

    def __init__(self, body: bytes, tmp: Path) -> None:
        self.body_file = tmp / f"bare-body-{secrets.token_hex(4)}.json"
        self.body_file.write_bytes(body)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"bare-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), "bare_app:app"]
                + ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
                + ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
                + ["--no-access-log"],
                env={**os.environ, "BARE_BODY_FILE": str(self.body_file)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise Failed(f"the bare app exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/x", timeout=2).content == body:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise Failed("the bare app did not answer in 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.proc)


# ---------------------------------------------------------------- the service


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    terminate(proc, timeout)


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_s: float

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def rss_mb(self) -> float:
        """RSS of the service process and its children (workers), MB."""
        me = psutil.Process(self.proc.pid)
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def rss_text(self) -> str:
        """The service's RSS and its children's, for the log."""
        try:
            me = psutil.Process(self.proc.pid)
            own = me.memory_info().rss / 2**20
            children = me.children(recursive=True)
            theirs = sum(c.memory_info().rss for c in children) / 2**20
        except psutil.Error as exc:
            return f"unknown ({exc})"
        return f"{own:.1f} MB (+ {theirs:.1f} MB in {len(children)} child process(es))"

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Installation:
    """One database and the MLX_HOME the service runs on it with (kept across restarts)."""

    url: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Service:
        """`mlx serve`, timed from the spawn until /readyz answers 200."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.home.parent / f"{self.home.name}-{port}.log"
        t0 = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlx_platform.cli.main", "serve"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = t0 + 120
        with httpx.Client(timeout=2) as poller:
            while True:
                if proc.poll() is not None:
                    raise Failed(f"mlx serve exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    if poller.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    _stop(proc)
                    raise Failed(f"mlx serve not ready in 120 s:\n{log.read_text()}")
                time.sleep(0.01)
        return Service(url, proc, log, time.perf_counter() - t0)


def make_installation(url: str, home: Path, jwt_secret: str, secret_key: str) -> Installation:
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(FIXTURE_PLUGINS), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update(
        MLX_HOME=str(home),
        MLX_DATABASE_URL=url,
        MLX_JWT_SECRET=jwt_secret,
        MLX_SECRET_KEY=secret_key,
    )
    return Installation(url, home, env)


def timed_starts(inst: Installation, keep_last: bool) -> tuple[list[float], float, Service | None]:
    """STARTS timed starts (a first start, which seeds the example plugins, was made before);
    the idle RSS of the last one, left running when `keep_last`."""
    times: list[float] = []
    for i in range(STARTS):
        svc = inst.start()
        times.append(svc.ready_s)
        if i < STARTS - 1:
            svc.stop()
    time.sleep(IDLE_S)
    try:
        rss = svc.rss_mb()
    except Exception:
        svc.stop()
        raise
    if not keep_last:
        svc.stop()
        return times, rss, None
    return times, rss, svc


# ---------------------------------------------------------------- measurements


class WorkerRoundTrip:
    """A worker process of bench_runtime.py's plugin, started in this process: `us()` is the
    median round trip of one invocation to it (2,000 back to back). Timed in the rounds of
    `sequential_pair`, beside the figures it is a baseline of: on this machine the same
    measurement has given 44 to 147 us minutes apart (how fast a sleeping process wakes
    changes with the machine's other load)."""

    def __init__(self) -> None:
        from mlx_platform.runtime.process import ProcessInstance

        self.inst = ProcessInstance(
            "plugin_bench_api_rt", "bench_runtime.BenchPlugin", extra_paths=[str(BENCH)]
        )
        self.inst.configure({}, 10)
        self.inst.start(10)

    def us(self) -> float:
        return each_call_us(lambda: self.inst.invoke("echo", {"value": 1}, None), calls=2000)

    def stop(self) -> None:
        self.inst.stop(graceful_timeout=1, force=False)


def versus_bare(
    client: httpx.Client, url: str, path: str, tmp: Path, *, post: str | None = None
) -> tuple[Load, Load]:
    """wrk on the service's `path`, then on the bare app answering the same bytes."""
    if shutil.which("wrk") is None:
        raise Failed("wrk is not installed (apt-get install wrk)")
    if post is None:
        r = client.get(path)
    else:
        r = client.post(path, content=post, headers={"Content-Type": "application/json"})
    if r.status_code != 200:
        raise Failed(f"{path} answered {r.status_code}: {r.text[:500]}")
    script = None
    if post is not None:
        script = tmp / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = '{post}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    headers = [f"{k}: {v}" for k, v in client.headers.items() if k.lower() == "authorization"]
    bare = BareApp(r.content, tmp)
    try:
        if WRK_WARMUP:
            try:
                wrk(url + path, headers=headers, script=script, seconds=WRK_WARMUP)
            except Failed:
                pass  # the measured run says it
        ours: Load | Failed
        try:
            ours = wrk(url + path, headers=headers, script=script, seconds=WRK_SECONDS)
        except Failed as exc:
            ours = exc
        if WRK_WARMUP:
            wrk(bare.url + path, headers=headers, script=script, seconds=WRK_WARMUP)
        theirs = wrk(bare.url + path, headers=headers, script=script, seconds=WRK_SECONDS)
    finally:
        bare.stop()
    _log(
        f"{path} ({len(r.content)} bytes): "
        + (
            f"{ours.rps:.0f} req/s, p50 {ours.p50_ms:.2f} ms, p99 {ours.p99_ms:.2f} ms"
            if isinstance(ours, Load)
            else "FAILED"
        )
        + f"; bare {theirs.rps:.0f} req/s, p50 {theirs.p50_ms:.2f} ms, p99 {theirs.p99_ms:.2f} ms"
    )
    if theirs.rps < 10_000:
        _log(
            f"the bare app made {theirs.rps:.0f} req/s (< 10,000): the machine is busy, "
            "or the load generator is the bottleneck; figures against it are weak"
        )
    if isinstance(ours, Failed):
        raise BareKnown(theirs, str(ours))
    return ours, theirs


Check = Callable[[list[dict[str, Any]]], str | None]


def sequential_pair(
    url: str, headers: list[str], get_path: str, echo: str, tmp: Path
) -> tuple[float, float, float]:
    """p50 (ms) of GET `get_path` and of an invocation of the echo plugin, one request at a
    time (`wrk -c1`, the load generator of the other figures: the client's own cost is small
    and the same for both, where a Python client builds a POST slower than a GET), and the
    worker round trip (ms, `WorkerRoundTrip`), in alternating runs so all three see the same
    machine; the median of each kind's runs. What a call costs beyond a read, without the
    queueing of a saturated server (under `-c32` each p50 is the connections over the
    throughput)."""
    script = tmp / "invoke-one.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{INVOKE_BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    gets: list[float] = []
    calls: list[float] = []
    trips: list[float] = []
    worker = WorkerRoundTrip()
    try:
        for _ in range(PAIR_ROUNDS):
            gets.append(wrk(url + get_path, headers=headers, script=None, seconds=2, c=1).p50_ms)
            calls.append(
                wrk(
                    url + f"/v1/plugins/{echo}/invoke",
                    headers=headers,
                    script=script,
                    seconds=2,
                    c=1,
                ).p50_ms
            )
            trips.append(worker.us() / 1000)
    finally:
        worker.stop()
    get_p50, call_p50, trip = (statistics.median(x) for x in (gets, calls, trips))
    _log(
        f"one connection: GET one plugin p50 {get_p50:.3f} ms {gets}, "
        f"invoke p50 {call_p50:.3f} ms {calls}; "
        f"worker round trip {trip * 1000:.1f} us {[round(t * 1000, 1) for t in trips]}"
    )
    return get_p50, call_p50, trip


def interleaved_p50_ms(
    client: httpx.Client, path: str, asks: list[tuple[dict[str, Any], Check]]
) -> list[tuple[float, int]]:
    """The p50 latency of each ask, one request at a time, and its answer's total.

    First one request of each through `client` (keep-alive httpx), whose answer must be 200
    and a full page whose items pass the ask's check; then LATENCY_ROUNDS rounds of one
    `wrk -t1 -c1` run of LATENCY_SECONDS per ask, the asks in turn so that they see the same
    machine, every answer 200 (wrk counts any other as a failure); each ask's figure is the
    median of its runs' p50. wrk, the load generator of the throughput figures, times the
    service: a Python client's own time per request (1-3 ms on this 2-core machine for
    httpx, beside the server on the other core; a raw socket client measured the server's
    own p50 1-3 ms lower) is not the service's latency. The p50 of REQUESTS sequential httpx
    requests is logged beside it.

    Each request says `Cache-Control: no-cache`, which the service's read cache honours
    (server/read_cache.py): what is timed is the query and the route, not a kept answer."""
    totals: list[int] = []
    urls: list[str] = []
    for params, check in asks:
        t0 = time.perf_counter()
        r = client.get(path, params=params, headers=FRESH)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise Failed(f"GET {path} {params} answered {r.status_code}: {r.text[:500]}")
        # the first answer: nothing of this query kept yet (storage/listing.py keeps counts
        # and deep pages' first rows per data version): said, not counted
        _log(f"GET {path} {params}: first request {elapsed * 1000:.2f} ms")
        body = r.json()
        limit = int(params.get("limit", PAGE))
        if len(body["data"]) != limit:
            raise Failed(f"GET {path} {params} answered {len(body['data'])} items, not {limit}")
        problem = check(body["data"])
        if problem:
            raise Failed(f"GET {path} {params}: {problem}")
        totals.append(int(body["pagination"]["total"]))
        urls.append(str(r.request.url))
        httpx_ms = []
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            client.get(path, params=params, headers=FRESH)
            httpx_ms.append((time.perf_counter() - t0) * 1000)
        _log(f"GET {path} {params}: httpx client p50 {statistics.median(httpx_ms):.2f} ms")
    auth = [f"{k}: {v}" for k, v in client.headers.items() if k.lower() == "authorization"]
    headers = auth + [f"{k}: {v}" for k, v in FRESH.items()]
    runs: list[list[float]] = [[] for _ in asks]
    for _ in range(LATENCY_ROUNDS):
        for n, url in enumerate(urls):
            runs[n].append(
                wrk(url, headers=headers, script=None, seconds=LATENCY_SECONDS, c=1).p50_ms
            )
    for (params, _), got in zip(asks, runs, strict=True):
        _log(f"GET {path} {params}: wrk -c1 p50 per run {_fmt(got)} ms")
    return [(statistics.median(got), total) for got, total in zip(runs, totals, strict=True)]


def sequential_p50_ms(
    client: httpx.Client, path: str, params: dict[str, Any], check: Check
) -> tuple[float, int]:
    """`interleaved_p50_ms` of one request: its median latency and its answer's total."""
    ((p50, total),) = interleaved_p50_ms(client, path, [(params, check)])
    return p50, total


_NO_INDEX_PG = ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan")


def like_scan_ms(url: str, columns: tuple[str, ...], term: str) -> tuple[float, int]:
    """A plain LIKE scan of the plugins table on the database directly, `%term%` on each of
    `columns` (a search: name and description; a filter: its own column, so that it finds the
    filter's rows): the first page in the list's order, as the database plans it (it walks
    the order index and stops at the page's end), and the COUNT of every match, which reads
    the table (an index of the column could only be read whole: SQLite's NOT INDEXED,
    PostgreSQL's index scans off for that statement). Median of LIKE_REPEATS, after one."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    pg = engine.dialect.name == "postgresql"
    op = "ILIKE" if pg else "LIKE"  # SQLite's LIKE folds ASCII letters
    cond = " OR ".join(f"{c} {op} :q" for c in columns)
    page = text(f"SELECT * FROM plugins WHERE {cond} ORDER BY created_at, id LIMIT {PAGE}")
    scanned = "plugins" if pg else "plugins NOT INDEXED"
    count = text(f"SELECT count(*) FROM {scanned} WHERE {cond}")
    q = {"q": f"%{term}%"}
    samples = []
    n = 0
    try:
        with engine.connect() as conn:
            for i in range(LIKE_REPEATS + 1):
                t0 = time.perf_counter()
                rows = conn.execute(page, q).fetchall()
                took = time.perf_counter() - t0
                for setting in _NO_INDEX_PG if pg else ():
                    conn.execute(text(f"SET {setting} = off"))
                t0 = time.perf_counter()
                n = int(conn.execute(count, q).scalar_one())
                took += time.perf_counter() - t0
                for setting in _NO_INDEX_PG if pg else ():
                    conn.execute(text(f"RESET {setting}"))
                if i:
                    samples.append(took * 1000)
            if len(rows) != PAGE:
                raise Failed(f"the LIKE scan for {term!r} found {len(rows)} rows")
    finally:
        engine.dispose()
    return statistics.median(samples), n


def register_echo(client: httpx.Client) -> str:
    """A trivial plugin (tests/fixtures: EchoPlugin), to run in a worker process."""
    r = client.post(
        "/v1/plugins",
        json={
            "name": "bench-api-echo",
            "type": "bench_probe",
            "version": "1.0.0",
            "description": "answers what it is given",
            "class_path": "mlx_test_plugins.EchoPlugin",
            "isolation": "process",
            "configuration_schema": {},
            "metadata": {},
        },
    )
    if r.status_code != 201:
        raise Failed(f"register answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["data"]["id"])


def activate(client: httpx.Client, plugin_id: str) -> None:
    t0 = time.perf_counter()
    r = client.post(f"/v1/plugins/{plugin_id}/activate", json={"configuration": {}})
    if r.status_code != 200:
        raise Failed(f"activate answered {r.status_code}: {r.text[:500]}")
    _log(f"echo plugin activated in {time.perf_counter() - t0:.2f} s")


# ---------------------------------------------------------------- figures


@dataclass
class Results:
    """What one database's run measured; a missing entry is a measurement that failed."""

    db: str
    loads: dict[str, tuple[Load | None, Load | None]] = field(default_factory=dict)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # ours, like ms
    page: tuple[float, float] | None = None  # page 1, page 4000 ms
    # sort=name: page 1, page 4000, and page 1 in the default order (its baseline), ms
    sorted_page: tuple[float, float, float] | None = None
    ready: tuple[float, float | None] | None = None  # 100k, empty database s
    memory: tuple[float, float | None] | None = None  # 100k, empty database MB
    memory_after_use: float | None = None  # MB, idle after every measurement, echo deactivated
    worker_rt_ms: float | None = None
    sequential: tuple[float, float] | None = None  # GET one plugin, invoke: p50 ms, one client


SEARCHES = {  # figure -> (query parameters, LIKE columns, LIKE term)
    "search_common": lambda s: ({"search": s.COMMON_TERM}, ("name", "description"), s.COMMON_TERM),
    "search_2char": lambda s: ({"search": s.SHORT_TERM}, ("name", "description"), s.SHORT_TERM),
    "type_filter": lambda s: ({"type": s.FILTER_TYPE}, ("type",), s.FILTER_TYPE),
    "status_filter": lambda s: ({"status": s.FILTER_STATUS}, ("status",), s.FILTER_STATUS),
}
LOADS = {  # figure stem -> wrk target, minimum share of the bare app's throughput
    "api_list_100k": 0.5,
    "api_get": 0.5,
    "api_healthz": 0.5,
    "api_invoke": 0.3,
}


def _paired(
    name: str,
    pair: tuple[float, float | None] | None,
    unit: str,
    target: float,
    baseline_name: str,
) -> Figure:
    """A figure measured beside its baseline in the same run: `pair` is (ours, baseline),
    None when the step failed (then MISSED, with no baseline)."""
    return Figure(
        name,
        pair[0] if pair else math.inf,
        unit,
        target,
        pair[1] if pair else None,
        baseline_name,
    )


def figures_for(r: Results) -> list[Figure]:
    sfx = f"_{r.db}"
    out: list[Figure] = []
    nan = math.nan
    for stem, share in LOADS.items():
        ours, bare = r.loads.get(stem, (None, None))
        out.append(
            Figure(
                f"{stem}_throughput{sfx}",
                ours.rps if ours else 0.0,
                "req/s",
                share * bare.rps if bare else nan,
                bare.rps if bare else None,
                BARE,
                lower_is_better=False,
            )
        )
        if stem == "api_list_100k":
            out.append(
                Figure(
                    f"api_list_100k_p99{sfx}",
                    ours.p99_ms if ours else math.inf,
                    "ms",
                    2 * bare.p99_ms if bare else nan,
                    bare.p99_ms if bare else None,
                    BARE,
                )
            )
        if stem == "api_invoke":
            rt = r.worker_rt_ms
            read_p50, call_p50 = r.sequential if r.sequential else (None, None)
            out.append(
                Figure(
                    f"api_invoke_p50{sfx}",
                    call_p50 if call_p50 is not None else math.inf,
                    "ms",
                    read_p50 + 2 * rt if read_p50 is not None and rt is not None else nan,
                    read_p50,
                    "(GET one plugin p50, wrk -c1, alternated; target + 2x worker round "
                    + (f"trip {rt * 1000:.0f} us)" if rt is not None else "trip n/a)"),
                )
            )
    for stem in SEARCHES:
        got = r.latency.get(stem)
        out.append(
            _paired(
                f"{stem}_p50{sfx}",
                got,
                "ms",
                5.0,
                "(LIKE scan of the same table: first page + COUNT)",
            )
        )
        out.append(
            Figure(
                f"{stem}_vs_like{sfx}",
                got[1] / got[0] if got else 0.0,
                "x",
                10.0,
                1.0,
                "(LIKE scan = 1)",
                lower_is_better=False,
            )
        )
    out.append(
        Figure(
            f"page_4000_p50{sfx}",
            r.page[1] if r.page else math.inf,
            "ms",
            1.5 * r.page[0] if r.page else nan,
            r.page[0] if r.page else None,
            "(page 1, limit 25)",
        )
    )
    first, deep, unsorted = r.sorted_page if r.sorted_page else (math.inf, math.inf, None)
    out.append(
        Figure(
            f"sort_name_page_1_p50{sfx}",
            first,
            "ms",
            5.0,
            unsorted,
            "(page 1 in the default order, limit 25)",
        )
    )
    out.append(
        Figure(
            f"sort_name_page_{DEEP[1]}_p50{sfx}",
            deep,
            "ms",
            1.5 * first if r.sorted_page else nan,
            first if r.sorted_page else None,
            "(sort=name page 1, limit 25)",
        )
    )
    out.append(_paired(f"ready_100k{sfx}", r.ready, "s", 1.5, "(same start on an empty database)"))
    out.append(
        _paired(f"idle_memory_100k{sfx}", r.memory, "MB", 150.0, "(same on an empty database)")
    )
    out.append(
        Figure(
            f"idle_memory_100k_after_use{sfx}",
            r.memory_after_use if r.memory_after_use is not None else math.inf,
            "MB",
            150.0,
            r.memory[0] if r.memory else None,
            "(the same service idle right after ready)",
        )
    )
    return out


# ---------------------------------------------------------------- one database


def _step(what: str, func: Callable[[], None], svc: Service | None = None) -> bool:
    try:
        func()
        if svc is not None:
            _log(f"{what}: RSS of the service now {svc.rss_text()}")
        return True
    except Exception as exc:  # noqa: BLE001 - said, and the figure shows MISSED
        detail = str(exc) if isinstance(exc, Failed) else traceback.format_exc()
        _log(f"{what} failed; its figures are reported as MISSED:\n{detail}")
        return False


def measure(r: Results, url_full: str, url_empty: str, tmp: Path) -> None:
    """On each database, a first start of `mlx serve` (it migrates and registers the example
    plugins; on the one to be filled it also registers the echo plugin while that is quick),
    then the bulk load of the catalogue, then the timed starts; the last start on the full
    database stays up for the load and latency measurements."""
    import _seed
    from cryptography.fernet import Fernet

    from mlx_platform.server.auth import create_token

    jwt_secret = secrets.token_urlsafe(48)
    key = Fernet.generate_key().decode()
    token = create_token(jwt_secret, "bench", ["plugins:admin"], 7200)
    auth = {"Authorization": f"Bearer {token}"}
    empty = make_installation(url_empty, tmp / "home-empty", jwt_secret, key)
    full = make_installation(url_full, tmp / "home-100k", jwt_secret, key)

    baseline: dict[str, Any] = {}

    def empty_starts() -> None:
        empty.start().stop()
        times, rss, _ = timed_starts(empty, keep_last=False)
        baseline.update(ready=statistics.median(times), rss=rss)
        _log(f"{r.db}: empty database ready in {_fmt(times)} s, idle {rss:.1f} MB")

    _step(f"{r.db}: starts on the empty database", empty_starts)

    first = full.start()
    try:
        with httpx.Client(base_url=first.url, headers=auth, timeout=120) as client:
            echo = register_echo(client)
    finally:
        first.stop()
    seeded = _seed.seed(url_full, PLUGINS)
    _log(
        f"{r.db}: {seeded.rows} plugins stored in {seeded.seconds:.1f} s "
        f"({_seed.COMMON_TERM!r} in {seeded.common}, {_seed.SHORT_TERM!r} in {seeded.short}, "
        f"type {_seed.FILTER_TYPE} {seeded.of_type}, status {_seed.FILTER_STATUS} "
        f"{seeded.of_status})"
    )
    times, rss, svc = timed_starts(full, keep_last=True)
    assert svc is not None
    _log(f"{r.db}: 100k database ready in {_fmt(times)} s, idle {rss:.1f} MB")
    r.ready = (statistics.median(times), baseline.get("ready"))
    r.memory = (rss, baseline.get("rss"))
    try:
        with httpx.Client(base_url=svc.url, headers=auth, timeout=120) as client:
            load_and_latency(r, client, svc, url_full, tmp, echo)
            # The service's memory after use: the echo plugin's worker process is that
            # plugin's (the RSS with it is in the log), so it is deactivated first.
            _log(f"{r.db}: after use, the echo plugin active: RSS {svc.rss_text()}")
            deactivated = client.post(f"/v1/plugins/{echo}/deactivate", json={})
            if deactivated.status_code != 200:
                raise Failed(f"deactivate answered {deactivated.status_code}")
        time.sleep(IDLE_S)
        r.memory_after_use = svc.rss_mb()
        _log(f"{r.db}: after use, the echo plugin deactivated: RSS {svc.rss_text()}")
    finally:
        svc.stop()
        if svc.proc.returncode not in (0, -signal.SIGTERM, None):
            _log(f"{r.db}: mlx serve exited with {svc.proc.returncode}:\n{svc.log_tail()}")


def load_and_latency(
    r: Results, client: httpx.Client, svc: Service, db_url: str, tmp: Path, echo: str
) -> None:
    import _seed

    url = svc.url

    one = _seed.row_id(PLUGINS // 2, PLUGINS)
    paths = {
        "api_list_100k": f"/v1/plugins?limit={PAGE}",
        "api_get": f"/v1/plugins/{one}",
        "api_healthz": "/healthz",
    }

    def pair(stem: str, path: str, post: str | None = None) -> Callable[[], None]:
        def go() -> None:
            try:
                r.loads[stem] = versus_bare(client, url, path, tmp, post=post)
            except BareKnown as exc:
                r.loads[stem] = (None, exc.bare)
                raise

        return go

    for stem, path in paths.items():
        _step(f"{r.db}: {stem}", pair(stem, path), svc)
    if _step(f"{r.db}: activate the echo plugin", lambda: activate(client, echo), svc):
        _step(
            f"{r.db}: api_invoke",
            pair("api_invoke", f"/v1/plugins/{echo}/invoke", post=INVOKE_BODY),
            svc,
        )

        def one_client() -> None:
            auth = [f"{k}: {v}" for k, v in client.headers.items() if k.lower() == "authorization"]
            get_p50, call_p50, r.worker_rt_ms = sequential_pair(
                url, auth, paths["api_get"], echo, tmp
            )
            r.sequential = (get_p50, call_p50)

        _step(f"{r.db}: api_invoke_p50 (one client)", one_client, svc)
    for stem, make in SEARCHES.items():
        params, columns, term = make(_seed)
        _step(
            f"{r.db}: {stem}",
            lambda stem=stem, params=params, columns=columns, term=term: search(
                r, client, db_url, stem, params, columns, term
            ),
            svc,
        )

    def pages() -> None:
        limit, deep = DEEP
        (first, _), (last, total) = interleaved_p50_ms(
            client,
            "/v1/plugins",
            [
                ({"limit": limit, "page": 1}, page_check(db_url, limit, 1)),
                ({"limit": limit, "page": deep}, page_check(db_url, limit, deep)),
            ],
        )
        r.page = (first, last)
        _log(f"{r.db}: page 1 p50 {first:.2f} ms, page {deep} p50 {last:.2f} ms (total {total})")

    _step(f"{r.db}: pages", pages, svc)
    _step(f"{r.db}: sorted pages", lambda: sorted_pages(r, client, db_url), svc)


def sorted_pages(r: Results, client: httpx.Client, db_url: str) -> None:
    """`sort=name`: page 1 and page DEEP (limit 25), and page 1 in the default order, the
    baseline: one request of each in turn (`interleaved_p50_ms`), so that the three see the
    same machine; each page as the database orders it."""
    limit, deep = DEEP
    name_order = "name, id"
    (plain, _), (first, _), (last, _) = interleaved_p50_ms(
        client,
        "/v1/plugins",
        [
            ({"limit": limit, "page": 1}, page_check(db_url, limit, 1)),
            ({"limit": limit, "page": 1, "sort": "name"}, page_check(db_url, limit, 1, name_order)),
            (
                {"limit": limit, "page": deep, "sort": "name"},
                page_check(db_url, limit, deep, name_order),
            ),
        ],
    )
    r.sorted_page = (first, last, plain)
    _log(
        f"{r.db}: sort=name page 1 p50 {first:.2f} ms, page {deep} p50 {last:.2f} ms; "
        f"default order page 1 p50 {plain:.2f} ms"
    )


def search(
    r: Results,
    client: httpx.Client,
    db_url: str,
    stem: str,
    params: dict[str, Any],
    columns: tuple[str, ...],
    term: str,
) -> None:
    def matching(items: list[dict[str, Any]]) -> str | None:
        wrong = [
            i["id"] for i in items if not any(term.lower() in str(i[c]).lower() for c in columns)
        ]
        return f"{len(wrong)} item(s) without {term!r} in {columns}: {wrong[:3]}" if wrong else None

    ours, total = sequential_p50_ms(client, "/v1/plugins", {**params, "limit": PAGE}, matching)
    like, n = like_scan_ms(db_url, columns, term)
    r.latency[stem] = (ours, like)
    _log(
        f"{r.db}: {stem} {params}: p50 {ours:.2f} ms (answer's total {total}); "
        f"LIKE scan {like:.2f} ms ({n} matches)"
    )


def page_check(db_url: str, limit: int, page: int, order: str = "created_at, id") -> Check:
    """The page must hold the plugins the database has there in the list's order (`order`,
    by default creation time, then id): a deep page answered fast with the wrong rows would
    not count."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            want = list(
                conn.execute(
                    text(f"SELECT id FROM plugins ORDER BY {order} LIMIT :n OFFSET :o"),
                    {"n": limit, "o": (page - 1) * limit},
                ).scalars()
            )
    finally:
        engine.dispose()

    def check(items: list[dict[str, Any]]) -> str | None:
        got = [i["id"] for i in items]
        return None if got == want else f"ids {got[:3]}... where the database has {want[:3]}..."

    return check


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def run_sqlite(r: Results) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mlxbench_api_sqlite_"))
    try:
        measure(r, f"sqlite:///{tmp / 'full.db'}", f"sqlite:///{tmp / 'empty.db'}", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_postgresql(r: Results) -> None:
    import psycopg

    names = [f"mlxbench_api_{secrets.token_hex(5)}_{k}" for k in ("full", "empty")]
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise Failed(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc})") from None
    tmp = Path(tempfile.mkdtemp(prefix="mlxbench_api_pg_"))
    try:
        measure(r, f"{PG_URL}/{names[0]}", f"{PG_URL}/{names[1]}", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            _log(f"could not drop databases {names}: {exc}")


def run() -> list[Figure]:
    figures: list[Figure] = []
    runners = {"sqlite": run_sqlite, "postgresql": run_postgresql}
    for db in DATABASES:
        r = Results(db)
        t0 = time.perf_counter()
        _step(f"{db}", lambda r=r, db=db: runners[db](r))
        _log(f"{db}: {time.perf_counter() - t0:.0f} s")
        figures += figures_for(r)
    return figures


if __name__ == "__main__":
    for f in run():
        print(f.line())
