"""Limits before reading, and bad input (issue 11).

The size limits of bodies and heads are about bytes on a socket (what h11/uvicorn buffer, what
a client can stream, the service's memory meanwhile): those tests talk HTTP to `mlx serve` in
its own process (`process_live_server`); the others to the in-process app.

- A body over MLX_MAX_BODY_BYTES is refused with 413 in the envelope before any of it is
  read (from its Content-Length, or while a chunked one streams), before the token check.
- Heads over MLX_MAX_HEADER_BYTES answer 431 in the envelope (over 1 MiB, from the HTTP
  protocol itself, before the head is kept whole).
- JSON nesting, metadata, manifests and configurations are capped; refused ones change nothing.
- Control characters in parameters and out-of-range dates are 4xx, never 500 (on SQLite and,
  with MLX_TEST_DATABASE=postgres, on PostgreSQL, which refuses NUL in text outright).
- The import process of a registration that prints 300 MB costs the service no memory.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from mlx_platform.runtime import throwaway
from tests.conftest import LiveServer, assert_error, plugin_body, register

MiB = 1024 * 1024


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return {"k": value} if depth else value


class PeakRSS(threading.Thread):
    """Samples a process's resident memory until stopped; `peak` is the largest sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.start_rss = self.process.memory_info().rss
        self.peak = self.start_rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop_event.wait(0.01)

    def finish(self) -> int:
        self._stop_event.set()
        self.join(10)
        self.end_rss = self.process.memory_info().rss
        self.peak = max(self.peak, self.end_rss)
        return self.peak - self.start_rss


def raw_exchange(url: str, head: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """Send `head` (request line and headers) on a plain socket and read the answer; send no
    body at all. Returns status, headers, parsed JSON body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, json.loads(body) if body else None


def megabytes(total_mb: int, counter: list[int] | None = None) -> Iterator[bytes]:
    """`total_mb` MiB in 1 MiB chunks (one bytes object, reused: cheap for the test)."""
    block = b"x" * MiB
    for _ in range(total_mb):
        if counter is not None:
            counter[0] += len(block)
        yield block


# ---------------------------------------------------------------- body size


def test_a_declared_body_over_the_cap_is_refused_before_one_byte_of_it_is_sent(
    process_live_server: LiveServer,
) -> None:
    live_server = process_live_server
    # Content-Length says 100 MB; nothing follows the head. Without the limit the service
    # waits for the body (the socket times out); with it, the 413 comes at once, before
    # the token (there is none) is even looked at.
    head = (
        b"POST /v1/plugins HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    status, headers, body = raw_exchange(live_server.url, head)
    assert status == 413, body
    assert body["success"] is False
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body["error"]["details"]["limit_bytes"] == MiB
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert headers["connection"] == "close"


def test_a_chunked_body_over_the_cap_is_refused_while_it_streams(
    process_live_server: LiveServer,
) -> None:
    live_server = process_live_server
    sent = [0]
    r = httpx.post(
        f"{live_server.url}/v1/plugins",
        content=megabytes(100, sent),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    # no token: without the limit the service reads all 100 MB, then answers 401
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert sent[0] < 100 * MiB, "the client could send the whole body"


def test_the_cap_is_a_setting_and_bodies_under_it_go_through(server_factory) -> None:
    srv = server_factory(max_body_bytes=4096)
    with srv.client() as c:
        big = plugin_body("capped_plugin", description="d" * 5000)
        assert_error(c.post("/v1/plugins", json=big), 413, "PAYLOAD_TOO_LARGE")
        # chunked (no Content-Length), over the cap: refused while streaming
        r = c.post(
            "/v1/plugins",
            content=iter([json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)]),
            headers={"Content-Type": "application/json"},
        )
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        small = plugin_body("capped_plugin", description="d" * 1000)
        assert c.post("/v1/plugins", json=small).status_code == 201
        # chunked under the cap is read whole and answered as usual
        small2 = json.dumps(plugin_body("capped_plugin_two")).encode()
        r = c.post(
            "/v1/plugins",
            content=iter([small2[:100], small2[100:]]),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        names = {p["name"] for p in c.get("/v1/plugins", params={"limit": 100}).json()["data"]}
        assert {"capped_plugin", "capped_plugin_two"} <= names
    assert " 413 " in srv.log_text()  # the access log has the refusals


def test_four_100_mb_uploads_without_a_token_cost_the_service_no_memory(
    process_live_server: LiveServer,
) -> None:
    """Two declare their length, two stream chunked; the service's RSS is sampled all along."""
    live_server = process_live_server
    url = f"{live_server.url}/v1/plugins"

    def upload(declared: bool) -> int:
        headers = {"Content-Type": "application/json"}
        if declared:
            headers["Content-Length"] = str(100 * MiB)
        try:
            r = httpx.post(url, content=megabytes(100), headers=headers, timeout=120)
        except httpx.TransportError:
            return 0  # the connection closed under a client still writing: refused anyway
        return r.status_code

    with live_server.client() as c:  # warm up: the first requests allocate for good
        c.get("/v1/plugins")
    rss = PeakRSS(live_server.pid)
    rss.start()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(upload, [True, True, False, False]))
    growth = rss.finish()
    print(
        f"service RSS: start {rss.start_rss / MiB:.0f} MiB, peak {rss.peak / MiB:.0f} MiB, "
        f"end {rss.end_rss / MiB:.0f} MiB during 4 x 100 MB uploads"
    )
    assert set(statuses) <= {413, 0} and 413 in statuses, statuses
    assert growth < 40 * MiB, f"service grew by {growth / MiB:.0f} MiB"
    assert live_server.anonymous.get("/healthz").status_code == 200


# ---------------------------------------------------------------- headers


def test_headers_over_the_cap_answer_431_in_the_envelope(process_live_server: LiveServer) -> None:
    live_server = process_live_server
    with live_server.client() as c:
        r = c.get("/v1/plugins", headers={"X-Padding": "a" * 100_000})
        err = assert_error(r, 431, "HEADERS_TOO_LARGE")
        assert err["details"]["limit_bytes"] == 64 * 1024
        # so does a long query string (the target counts; httpx refuses such URLs itself)
        head = b"GET /v1/plugins?search=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        status, _, body = raw_exchange(live_server.url, head)
        assert (status, body["error"]["code"]) == (431, "HEADERS_TOO_LARGE")
        # a head the server cannot read in one go (asyncio reads 256 KiB at a time) reaches
        # the service too
        r = c.get("/v1/plugins", headers={"X-Padding": "a" * 600_000})
        assert_error(r, 431, "HEADERS_TOO_LARGE")
        # ordinary ones are served
        assert c.get("/v1/plugins", headers={"X-Padding": "a" * 8000}).status_code == 200


def test_heads_over_the_http_servers_own_limit_answer_431_and_leave_the_service_up(
    process_live_server: LiveServer,
) -> None:
    live_server = process_live_server
    # Over 1 MiB the HTTP protocol refuses the head itself (server/http_protocol.py), before
    # it is kept whole, in the same envelope; the service goes on serving.
    head = b"GET /v1/plugins HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * (2 * MiB) + b"\r\n\r\n"
    status, headers, body = raw_exchange(live_server.url, head)
    assert (status, body["error"]["code"]) == (431, "HEADERS_TOO_LARGE")
    assert body["error"]["details"]["limit_bytes"] == MiB
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert live_server.anonymous.get("/healthz").status_code == 200


# ---------------------------------------------------------------- JSON depth and sizes


def _names(c: httpx.Client, name: str) -> list[str]:
    r = c.get("/v1/plugins", params={"search": name, "limit": 100})
    return [p["name"] for p in r.json()["data"] if p["name"] == name]


def test_json_nested_deeper_than_32_levels_is_a_validation_error(
    admin: httpx.Client, unique_name: str
) -> None:
    r = admin.post("/v1/plugins", json=plugin_body(unique_name, metadata={"x": nested(40)}))
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert "nested deeper than 32 levels" in str(err["details"]["metadata"])
    assert "metadata" in str(err["message"])
    assert _names(admin, unique_name) == []
    # 31 levels are fine
    assert (
        admin.post(
            "/v1/plugins", json=plugin_body(unique_name, metadata={"x": nested(30)})
        ).status_code
        == 201
    )


def test_json_too_deep_for_the_parser_is_a_validation_error_not_a_500(
    admin: httpx.Client,
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    r = admin.post("/v1/plugins", content=deep, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "VALIDATION_ERROR")


def test_ten_megabytes_of_metadata_are_refused_and_nothing_is_registered(
    admin: httpx.Client, unique_name: str
) -> None:
    body = plugin_body(unique_name, metadata={"blob": "x" * (10 * MiB)})
    assert_error(admin.post("/v1/plugins", json=body), 413, "PAYLOAD_TOO_LARGE")
    # under the body cap, over the metadata cap: named
    body = plugin_body(unique_name, metadata={"blob": "x" * (100 * 1024)})
    err = assert_error(admin.post("/v1/plugins", json=body), 422, "VALIDATION_ERROR")
    assert "larger than 64 KiB" in str(err["details"]["metadata"])
    body = plugin_body(unique_name, metadata={"capabilities": [f"c{i}" for i in range(51)]})
    err = assert_error(admin.post("/v1/plugins", json=body), 422, "VALIDATION_ERROR")
    assert "metadata.capabilities" in err["details"]
    body = plugin_body(unique_name, tags=["t" * 65])
    assert_error(admin.post("/v1/plugins", json=body), 422, "VALIDATION_ERROR")
    body = plugin_body(
        unique_name,
        configuration_schema={f"f{i}": {"description": "d" * 400} for i in range(190)},
    )
    err = assert_error(admin.post("/v1/plugins", json=body), 422, "VALIDATION_ERROR")
    assert "configuration_schema" in err["details"]
    assert _names(admin, unique_name) == []


def test_list_pages_stay_small_with_the_largest_metadata_allowed(
    admin: httpx.Client, unique_name: str
) -> None:
    full = ["c" * 200] * 50
    metadata = {"capabilities": full, "conflicts_with": full, "integration_points": full}
    body = plugin_body(unique_name, description="d" * 4000, metadata=metadata)
    register(admin, unique_name, **{k: v for k, v in body.items() if k != "name"})
    r = admin.get("/v1/plugins", params={"search": unique_name})
    assert r.status_code == 200
    assert len(r.content) < 64 * 1024  # one item at its largest: a 100-item page < 6.4 MB


def test_oversized_or_too_deep_configuration_is_refused_and_changes_nothing(
    admin: httpx.Client, unique_name: str
) -> None:
    plugin_id = register(admin, unique_name)
    before = admin.get(f"/v1/plugins/{plugin_id}").json()["data"]
    r = admin.patch(
        f"/v1/plugins/{plugin_id}/configuration", json={"configuration": {"a": "x" * 100_000}}
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert "larger than 64 KiB" in str(err["details"]["configuration"])
    r = admin.patch(
        f"/v1/plugins/{plugin_id}/configuration", json={"configuration": {"a": nested(40)}}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    r = admin.post(
        f"/v1/plugins/{plugin_id}/activate", json={"configuration": {"a": "x" * 100_000}}
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert "configuration" in err["details"]
    after = admin.get(f"/v1/plugins/{plugin_id}").json()["data"]
    assert (after["status"], after["configuration"]) == (before["status"], before["configuration"])


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", ["search", "type", "category"])
@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "x\x1by", "tab\there", "del\x7f"])
def test_control_characters_in_list_parameters_are_a_validation_error(
    admin: httpx.Client, name: str, bad: str
) -> None:
    r = admin.get("/v1/plugins", params={name: bad})
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["details"] == {name: "must not contain control characters"}
    assert f"'{name}'" in str(err["message"])


def test_control_characters_in_a_plugin_id_are_a_validation_error(admin: httpx.Client) -> None:
    for path in ("/v1/plugins/a%00b", "/v1/plugins/a%00b/health", "/v1/plugins/%1b/metrics"):
        err = assert_error(admin.get(path), 422, "VALIDATION_ERROR")
        assert "plugin_id" in err["details"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"start_time": "9999-12-30T00:00:00Z", "end_time": "9999-12-31T00:00:00Z"}, "end_time"),
        ({"end_time": "9999-12-31T23:59:59Z"}, "end_time"),
        ({"end_time": "9999-12-31T23:59:59-14:00"}, "end_time"),
        ({"start_time": "0001-01-01T00:00:00+14:00"}, "start_time"),
        ({"start_time": "0001-01-01T00:00:00Z", "granularity": "day"}, "start_time"),
        ({"end_time": "1969-12-31T23:59:59Z"}, "end_time"),
        ({"start_time": "3000-01-01T00:00:00Z"}, "start_time"),
    ],
)
def test_metrics_for_out_of_range_dates_are_a_validation_error(
    admin: httpx.Client, params: dict[str, str], name: str
) -> None:
    r = admin.get("/v1/plugins/plugin_sqlite_source_001/metrics", params=params)
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert name in err["details"], err


def test_metrics_at_the_edges_of_the_range_are_served(admin: httpx.Client) -> None:
    for params in (
        {"start_time": "1970-01-01T00:00:00Z", "end_time": "1970-01-02T00:00:00Z"},
        {"start_time": "2999-12-30T00:00:00Z", "end_time": "2999-12-31T23:59:59Z"},
    ):
        r = admin.get("/v1/plugins/plugin_sqlite_source_001/metrics", params=params)
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------- the import process


def test_a_plugin_printing_300_mb_at_import_registers_without_costing_the_service_memory(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    rss = PeakRSS(live_server.pid)  # this process, for an in-process server
    rss.start()
    r = admin.post(
        "/v1/plugins", json=plugin_body(unique_name, class_path="mlx_loud_plugin.LoudPlugin")
    )
    growth = rss.finish()
    print(
        f"service RSS: start {rss.start_rss / MiB:.0f} MiB, peak {rss.peak / MiB:.0f} MiB "
        "while registering a plugin that prints 300 MB at import"
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["validation_results"]["class_loadable"] is True
    assert growth < 40 * MiB, f"service grew by {growth / MiB:.0f} MiB"


def test_the_import_process_of_a_registration_sees_none_of_the_services_settings(
    server_factory, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "env.txt"
    # the environment of the service's process (this one, for an in-process server)
    monkeypatch.setenv("MLX_JWT_SECRET", "s3cret-signing-key-for-this-test-only")
    monkeypatch.setenv("ENV_REPORT_FILE", str(report))
    # the process that forks import processes (runtime/zygote.py) starts again, now: with
    # the secret in the environment it is started from
    throwaway._close_zygote()
    srv = server_factory(jwt_secret="s3cret-signing-key-for-this-test-only")
    with srv.client() as c:
        body = plugin_body("env_probe", class_path="mlx_env_probe_plugin.EnvProbePlugin")
        r = c.post("/v1/plugins", json=body)
        assert r.status_code == 201, r.text
    seen = set(report.read_text().split())
    assert "ENV_REPORT_FILE" in seen  # the module did run and report
    assert "proc:PATH" in seen  # and read the environment block it was started with
    assert not {name for name in seen if "MLX_" in name}, sorted(seen)
