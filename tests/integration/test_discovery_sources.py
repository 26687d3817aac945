"""Discovery from every source, for real: plugin folders, installed wheels, a live package
index on 127.0.0.1, local git repositories, namespace packages; broken inputs of each kind."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    FIXTURE_PLUGINS,
    LiveServer,
    assert_error,
    free_port,
    register,
    start_inprocess,
    start_server,
)

GROUP = "mlx_platform.plugins"
BUILTIN = {"sqlite_source", "tabular_folder", "local_tracker"}


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers with MLX_* settings; with extra folders on their PYTHONPATH (what the
    service's own import path holds is the point: `mlx serve` processes), else in-process."""
    started: list[LiveServer] = []

    def make(
        *, pythonpath: tuple[Path, ...] = (), test_import_log: str | None = None, **settings: object
    ) -> LiveServer:
        settings.setdefault("seed_builtin_plugins", "false")
        home = tmp_path / f"home{len(started)}"
        if not pythonpath and not test_import_log:
            srv: LiveServer = start_inprocess(home, **settings)
            started.append(srv)
            return srv
        env = {f"MLX_{k.upper()}": str(v) for k, v in settings.items()}
        if test_import_log:
            # not an MLX_* variable: the service keeps those from plugin code (workers and the
            # registration's import process), and the import logger runs in both
            env["TEST_IMPORT_LOG"] = test_import_log
        parts = [
            *(str(p) for p in pythonpath),
            str(FIXTURE_PLUGINS),
            os.environ.get("PYTHONPATH", ""),
        ]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
        srv = start_server(home, **env)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def discover(client: httpx.Client, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/plugins/discover", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    data = dict(r.json()["data"])
    summary = data["discovery_summary"]
    plugins = data["discovered_plugins"]
    assert summary["total_discovered"] == len(plugins)
    assert summary["compatible_plugins"] == sum(p["compatible"] for p in plugins)
    assert summary["incompatible_plugins"] == sum(not p["compatible"] for p in plugins)
    assert summary["auto_registered"] == sum(p["auto_registered"] for p in plugins)
    for p in plugins:
        assert (p["incompatible_reason"] is None) == p["compatible"], p
    return data


def by_name(data: dict[str, Any], source: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        p["name"]: p for p in data["discovered_plugins"] if source is None or p["source"] == source
    }


def errors_about(data: dict[str, Any], text: str) -> list[dict[str, Any]]:
    return [e for e in data["errors"] if text in f"{e['location']} {e['message']}"]


def registered_names(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/v1/plugins", params={"limit": 100})
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()["data"]}


def toml_manifest(name: str, version: str = "1.0.0", **extra: str) -> str:
    """A mlx-plugin.toml; `extra` are lines of its [metadata] table (TOML values)."""
    lines = [
        f'name = "{name}"',
        'type = "data_source"',
        f'version = "{version}"',
        f'description = "{name} for discovery tests"',
        'class_path = "mlx_test_plugins.EchoPlugin"',
        "",
        "[metadata]",
        'capabilities = ["echo"]',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- wheels


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    folder: Path,
    dist: str,
    version: str,
    files: dict[str, str] | None = None,
    *,
    entry_points: dict[str, str] | None = None,
    metadata: list[str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """A wheel written with zipfile (a wheel is a zip with a dist-info folder)."""
    escaped = dist.replace("-", "_")
    info = f"{escaped}-{version}.dist-info"
    members: dict[str, bytes] = {k: v.encode() for k, v in (files or {}).items()}
    meta = ["Metadata-Version: 2.1", f"Name: {dist}", f"Version: {version}", *(metadata or [])]
    members[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    members[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: mlx-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if entry_points:
        body = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        members[f"{info}/entry_points.txt"] = f"[{GROUP}]\n{body}\n[console_scripts]\n".encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in members.items()]
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{escaped}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def pip_install(wheel: Path, target: Path) -> Path:
    """Install the wheel into a folder (then put on the server's path): a real pip install."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


IMPORT_LOGGER = """
import os
_log = os.environ.get("TEST_IMPORT_LOG")
if _log:
    with open(_log, "a") as _fh:
        _fh.write(f"{os.getpid()} {__name__}\\n")
"""

WHEEL_PLUGINS = (
    IMPORT_LOGGER
    + '''
from mlx_test_plugins import EchoPlugin


class WheelEcho(EchoPlugin):
    """An echo plugin shipped in a wheel."""

    name = "wheel_echo"
    type = "data_source"
    version = "2.0.0"
    metadata = {"capabilities": ["echo"]}


class WheelFuture(EchoPlugin):
    name = "wheel_future"
    type = "data_source"
    version = "1.0.0"
    metadata = {"platform_api": ">=2.0"}


class WheelTracker(EchoPlugin):
    name = "wheel_tracker"
    type = "experiment_tracker"
    version = "1.0.0"


class WheelUnversioned(EchoPlugin):
    name = "wheel_unversioned"
    type = "data_source"


def manifest():
    return {
        "name": "wheel_function",
        "type": "data_source",
        "version": "1.5.0",
        "description": "A manifest function",
        "class_path": "mlx_test_plugins.EchoPlugin",
        "metadata": {"capabilities": ["echo"]},
    }
'''
)


def installed_wheel(tmp_path: Path) -> Path:
    wheel = build_wheel(
        tmp_path / "dist",
        "mlx-plugin-wheeltest",
        "3.1.0",
        {"mlx_wheel_plugins.py": WHEEL_PLUGINS},
        entry_points={
            "wheel_echo": "mlx_wheel_plugins:WheelEcho",
            "wheel_function": "mlx_wheel_plugins:manifest",
            "wheel_future": "mlx_wheel_plugins:WheelFuture",
            "wheel_tracker": "mlx_wheel_plugins:WheelTracker",
            "wheel_unversioned": "mlx_wheel_plugins:WheelUnversioned",
        },
    )
    return pip_install(wheel, tmp_path / "site")


def broken_wheel(tmp_path: Path) -> Path:
    """Entry points each broken in its own way; a good one between them."""
    files = {
        "mlx_bad_raises.py": "raise RuntimeError('plugin import exploded')\n",
        "mlx_bad_exits.py": "import os\nos._exit(7)\n",
        "mlx_bad_hangs.py": "import time\ntime.sleep(120)\n",
        "mlx_bad_other.py": (
            "class NotAPlugin:\n    pass\n\n"
            "def bad_manifest():\n    return 42\n\n"
            "def no_class_path():\n    return {'name': 'x', 'type': 'data_source', 'version': '1'}\n\n"
            "from mlx_test_plugins import EchoPlugin\n\n"
            "class BadName(EchoPlugin):\n    name = 'bad name!'\n    type = 'data_source'\n"
            "    version = '1.0.0'\n\n"
            "class GoodBetween(EchoPlugin):\n    name = 'good_between'\n    type = 'data_source'\n"
            "    version = '1.0.0'\n"
        ),
    }
    wheel = build_wheel(
        tmp_path / "dist",
        "mlx-plugin-broken",
        "0.1.0",
        files,
        entry_points={
            "a_raises": "mlx_bad_raises:Plugin",
            "b_exits": "mlx_bad_exits:Plugin",
            "c_good": "mlx_bad_other:GoodBetween",
            "d_hangs": "mlx_bad_hangs:Plugin",
            "e_not_a_plugin": "mlx_bad_other:NotAPlugin",
            "f_missing_attr": "mlx_bad_other:Nowhere",
            "g_missing_module": "mlx_no_such_module:Plugin",
            "h_bad_manifest": "mlx_bad_other:bad_manifest",
            "i_no_class_path": "mlx_bad_other:no_class_path",
            "j_invalid_name": "mlx_bad_other:BadName",
        },
    )
    return pip_install(wheel, tmp_path / "broken_site")


# ---------------------------------------------------------------------------- filesystem


def test_plugin_folders_in_several_path_folders(serve, tmp_path: Path) -> None:
    one, two = tmp_path / "plugins_one", tmp_path / "plugins_two"
    write(one / "echo_a" / "mlx-plugin.toml", toml_manifest("fs_a"))
    write(one / "echo_b" / "mlx-plugin.toml", toml_manifest("fs_b", "2.1.0"))
    write(one / "not_a_plugin" / "notes.txt", "nothing here")
    write(
        two / "mlx-plugin.toml",
        "[plugin]\n" + toml_manifest("fs_root").replace("[metadata]", "[plugin.metadata]"),
    )
    write(
        two / "mars" / "mlx-plugin.toml", toml_manifest("fs_mars", supported_platforms='["plan9"]')
    )
    write(
        two / "future_api" / "mlx-plugin.toml", toml_manifest("fs_api", platform_api='">=2.0,<3"')
    )
    write(two / "future_py" / "mlx-plugin.toml", toml_manifest("fs_py", min_python_version='"9.1"'))
    write(two / "bad_toml" / "mlx-plugin.toml", 'name = "unclosed\n')
    write(two / "missing" / "mlx-plugin.toml", 'name = "fs_missing"\ntype = "data_source"\n')
    write(
        two / "invalid" / "mlx-plugin.toml",
        toml_manifest("fs_invalid").replace('"data_source"', '"Data Source"'),
    )
    nowhere = tmp_path / "does_not_exist"
    srv = serve(plugin_path=os.pathsep.join(map(str, (one, two, nowhere))))
    with srv.client() as client:
        data = discover(client, sources="filesystem")

    found = by_name(data)
    assert set(found) == {"fs_a", "fs_b", "fs_root", "fs_mars", "fs_api", "fs_py"}
    assert {p["source"] for p in found.values()} == {"filesystem"}
    assert found["fs_b"]["version"] == "2.1.0"
    assert found["fs_a"]["location"] == str(one / "echo_a" / "mlx-plugin.toml")
    assert found["fs_root"]["location"] == str(two / "mlx-plugin.toml")
    for name in ("fs_a", "fs_b", "fs_root"):
        assert found[name]["compatible"] is True
        assert found[name]["type"] == "data_source"
        assert found[name]["class_path"] == "mlx_test_plugins.EchoPlugin"
        assert found[name]["already_registered"] is False
        assert found[name]["conflicts"] == []
    assert "plan9" in found["fs_mars"]["incompatible_reason"]
    assert "platform API >=2.0,<3" in found["fs_api"]["incompatible_reason"]
    assert "Python 9.1" in found["fs_py"]["incompatible_reason"]
    assert data["discovery_summary"] == {
        "total_discovered": 6,
        "compatible_plugins": 3,
        "incompatible_plugins": 3,
        "auto_registered": 0,
    }
    assert len(data["errors"]) == 4, data["errors"]
    assert {e["source"] for e in data["errors"]} == {"filesystem"}
    assert "not valid TOML" in errors_about(data, "bad_toml")[0]["message"]
    assert (
        "missing required field(s): version, class_path"
        in errors_about(data, "missing")[0]["message"]
    )
    assert "type" in errors_about(data, "invalid")[0]["message"]
    assert errors_about(data, str(nowhere))[0]["message"] == "not a folder"


def test_auto_register_folders_reports_conflicts_and_skips_the_incompatible(
    serve, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write(plugins / "free" / "mlx-plugin.toml", toml_manifest("fs_free"))
    write(
        plugins / "rival" / "mlx-plugin.toml",
        toml_manifest("fs_rival", conflicts_with='["fs_blocker"]'),
    )
    write(
        plugins / "tracker" / "mlx-plugin.toml",
        toml_manifest("fs_tracker").replace('"data_source"', '"experiment_tracker"'),
    )
    write(
        plugins / "old_api" / "mlx-plugin.toml", toml_manifest("fs_old_api", platform_api='"<1.0"')
    )
    write(plugins / "blocker" / "mlx-plugin.toml", toml_manifest("fs_blocker"))
    srv = serve(plugin_path=str(plugins))
    with srv.client() as client:
        blocker = register(client, "fs_blocker")
        tracker = register(client, "active_tracker", type="experiment_tracker")
        for pid in (blocker, tracker):
            assert client.post(f"/v1/plugins/{pid}/activate").status_code == 200

        with srv.client(scopes=("plugins:write",)) as writer:
            assert_error(
                writer.get(
                    "/v1/plugins/discover",
                    params={"sources": "filesystem", "auto_register": "true"},
                ),
                403,
                "FORBIDDEN",
            )
        data = discover(client, sources="filesystem", auto_register="true")

        found = by_name(data)
        assert found["fs_free"]["auto_registered"] is True
        assert found["fs_free"]["plugin_id"] == "plugin_fs_free_001"
        assert found["fs_rival"]["conflicts"] == ["fs_blocker"]
        assert (
            found["fs_rival"]["auto_registered"] is True
        )  # a conflict is no reason not to register
        assert found["fs_tracker"]["conflicts"] == ["active_tracker"]
        assert found["fs_old_api"]["compatible"] is False
        assert found["fs_old_api"]["auto_registered"] is False
        # The active plugin the folder describes is that plugin: it does not conflict with itself.
        assert found["fs_blocker"]["already_registered"] is True
        assert found["fs_blocker"]["plugin_id"] == blocker
        assert found["fs_blocker"]["conflicts"] == []
        assert found["fs_blocker"]["auto_registered"] is False
        assert data["discovery_summary"]["auto_registered"] == 3
        registered = registered_names(client)
        assert {"fs_free", "fs_rival", "fs_tracker"} <= set(registered)
        assert "fs_old_api" not in registered
        assert registered["fs_free"]["status"] == "registered"
        # Registered the way POST /v1/plugins registers: the class was checked.
        r = client.get(f"/v1/plugins/{found['fs_free']['plugin_id']}")
        assert r.json()["data"]["description"] == "fs_free for discovery tests"

        again = discover(client, sources="filesystem", auto_register="true")
        assert again["discovery_summary"]["auto_registered"] == 0
        assert by_name(again)["fs_free"]["already_registered"] is True


# ---------------------------------------------------------------------------- installed


@pytest.mark.process  # the service's own PYTHONPATH
def test_installed_wheel_entry_points_are_read_once_outside_the_service(
    serve, tmp_path: Path
) -> None:
    site = installed_wheel(tmp_path)
    assert (site / "mlx_plugin_wheeltest-3.1.0.dist-info" / "entry_points.txt").is_file()
    import_log = tmp_path / "imports.log"
    srv = serve(pythonpath=(site,), test_import_log=str(import_log))
    with srv.client() as client:
        tracker = register(client, "active_tracker", type="experiment_tracker")
        assert client.post(f"/v1/plugins/{tracker}/activate").status_code == 200

        data = discover(client, sources="pypi")

        found = by_name(data)
        assert BUILTIN <= set(found)
        echo = found["wheel_echo"]
        assert echo["source"] == "pypi"
        assert echo["version"] == "2.0.0"
        assert echo["type"] == "data_source"
        assert echo["description"] == "An echo plugin shipped in a wheel."
        assert echo["class_path"] == "mlx_wheel_plugins.WheelEcho"
        assert echo["location"] == (
            "mlx-plugin-wheeltest 3.1.0 (entry point wheel_echo = mlx_wheel_plugins:WheelEcho)"
        )
        assert echo["compatible"] is True and echo["installed"] is True
        assert found["wheel_function"]["version"] == "1.5.0"
        assert found["wheel_function"]["class_path"] == "mlx_test_plugins.EchoPlugin"
        assert found["wheel_unversioned"]["version"] == "3.1.0"  # the distribution's
        assert "platform API >=2.0" in found["wheel_future"]["incompatible_reason"]
        assert found["wheel_tracker"]["conflicts"] == ["active_tracker"]
        assert data["errors"] == []

        # The plugin module was imported once, and not by the service.
        imports = import_log.read_text().splitlines()
        assert len(imports) == 1
        assert imports[0].split()[0] != str(srv.process.pid)
        assert "1 throwaway process(es)" in srv.log_text()

        # A second scan answers from the cache: nothing imported again.
        again = discover(client, sources="pypi")
        assert import_log.read_text().splitlines() == imports
        assert "0 read in 0 throwaway process(es)" in srv.log_text()
        assert by_name(again)["wheel_echo"] == echo

        again = discover(client, sources="pypi", auto_register="true")
        found = by_name(again)
        for name in ("wheel_echo", "wheel_function", "wheel_unversioned", *BUILTIN):
            assert found[name]["auto_registered"] is True, name
        assert found["wheel_tracker"]["auto_registered"] is True
        assert found["wheel_future"]["auto_registered"] is False
        registered = registered_names(client)
        assert registered["wheel_echo"]["status"] == "registered"

        # What discovery registered runs like anything registered through POST /v1/plugins.
        pid = found["wheel_echo"]["plugin_id"]
        assert client.post(f"/v1/plugins/{pid}/activate").status_code == 200
        r = client.post(
            f"/v1/plugins/{pid}/invoke", json={"operation": "add", "arguments": {"a": 2, "b": 3}}
        )
        assert r.json()["data"]["result"] == 5
        again = discover(client, sources="pypi")
        assert by_name(again)["wheel_echo"]["conflicts"] == []
        assert by_name(again)["wheel_echo"]["already_registered"] is True


@pytest.mark.process  # the service's own PYTHONPATH
def test_broken_entry_points_are_reported_each_and_spare_the_others(serve, tmp_path: Path) -> None:
    site = broken_wheel(tmp_path)
    srv = serve(pythonpath=(site,), class_check_timeout="4")
    with srv.client() as client:
        data = discover(client, sources="pypi")

    found = by_name(data)
    assert BUILTIN | {"good_between"} <= set(found)
    assert found["good_between"]["compatible"] is True
    expected = {
        "a_raises": "RuntimeError: plugin import exploded",
        "b_exits": "ended the process (exit code 7)",
        "d_hangs": "took longer than 4 s",
        "e_not_a_plugin": "not a subclass of mlx_platform.plugins.Plugin",
        "f_missing_attr": "has no attribute 'Nowhere'",
        "g_missing_module": "mlx_no_such_module",
        "h_bad_manifest": "returned int",
        "i_no_class_path": "returned no class_path",
        "j_invalid_name": "invalid manifest: name",
    }
    for entry_point, message in expected.items():
        [error] = errors_about(data, f"entry point {entry_point} =")
        assert error["source"] == "pypi"
        assert message in error["message"], error
    assert len(data["errors"]) == len(expected)
    assert srv.process.poll() is None


# ---------------------------------------------------------------------------- package index


class Index:
    """A simple repository (PEP 503 HTML, PEP 691 JSON) on 127.0.0.1, counting requests."""

    def __init__(self, root: Path, *, json_api: bool) -> None:
        self.root = root
        self.json_api = json_api
        self.projects: dict[str, list[dict[str, Any]]] = {}
        self.requests: Counter[str] = Counter()
        self.port = free_port()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                index.requests[self.path] += 1
                status, ctype, body = index.answer(self.path, self.headers.get("Accept", ""))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def add(self, project: str, path: Path, **extra: Any) -> None:
        """Offer a file; extra: requires_python, yanked, metadata (PEP 658 text), sha256."""
        (self.root / path.name).write_bytes(path.read_bytes())
        self.projects.setdefault(project, []).append({"filename": path.name, **extra})

    def answer(self, path: str, accept: str) -> tuple[int, str, bytes]:
        want_json = self.json_api and "application/vnd.pypi.simple.v1+json" in accept
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["simple"]:
            if want_json:
                body = {
                    "meta": {"api-version": "1.0"},
                    "projects": [{"name": n} for n in self.projects],
                }
                return 200, "application/vnd.pypi.simple.v1+json", json.dumps(body).encode()
            links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in self.projects)
            return 200, "text/html", f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
        if len(parts) == 2 and parts[0] == "simple":
            files = self.projects.get(parts[1])
            if files is None or parts[1] == "mlx-plugin-gone":
                return 404, "text/plain", b"not found"
            return self._project(parts[1], files, want_json)
        if len(parts) == 2 and parts[0] == "files":
            name = parts[1]
            if name.endswith(".metadata"):
                for files in self.projects.values():
                    for f in files:
                        if f["filename"] + ".metadata" == name and "metadata" in f:
                            return 200, "text/plain", f["metadata"].encode()
                return 404, "text/plain", b"no metadata"
            target = self.root / name
            if target.is_file():
                return 200, "application/octet-stream", target.read_bytes()
        return 404, "text/plain", b"not found"

    def _sha(self, f: dict[str, Any]) -> str:
        return (
            f.get("sha256") or hashlib.sha256((self.root / f["filename"]).read_bytes()).hexdigest()
        )

    def _project(
        self, name: str, files: list[dict[str, Any]], want_json: bool
    ) -> tuple[int, str, bytes]:
        if want_json:
            out = []
            for f in files:
                item: dict[str, Any] = {
                    "filename": f["filename"],
                    "url": f"../../files/{f['filename']}",
                    "hashes": {"sha256": self._sha(f)},
                }
                if f.get("requires_python"):
                    item["requires-python"] = f["requires_python"]
                if f.get("yanked"):
                    item["yanked"] = True
                if "metadata" in f:
                    item["core-metadata"] = {
                        "sha256": hashlib.sha256(f["metadata"].encode()).hexdigest()
                    }
                out.append(item)
            body = {"meta": {"api-version": "1.0"}, "name": name, "files": out}
            return 200, "application/vnd.pypi.simple.v1+json", json.dumps(body).encode()
        links = []
        for f in files:
            attrs = f'href="/files/{f["filename"]}#sha256={self._sha(f)}"'
            if f.get("requires_python"):
                attrs += f' data-requires-python="{f["requires_python"].replace(">", "&gt;")}"'
            if f.get("yanked"):
                attrs += ' data-yanked=""'
            if "metadata" in f:
                digest = hashlib.sha256(f["metadata"].encode()).hexdigest()
                attrs += f' data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}"'
            links.append(f"<a {attrs}>{f['filename']}</a><br/>")
        html = f"<!DOCTYPE html><html><body><h1>{name}</h1>{''.join(links)}</body></html>"
        return 200, "text/html", html.encode()

    def __enter__(self) -> Index:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _alpha_manifest(version: str) -> str:
    return toml_manifest("index_alpha", version).replace('version = "1.2.0"\n', "")


def fill_index(index: Index, wheels: Path) -> None:
    for version in ("1.0.0", "1.2.0", "1.3.0", "2.0.0rc1"):
        wheel = build_wheel(
            wheels,
            "mlx-plugin-alpha",
            version,
            {
                "mlx_plugin_alpha/__init__.py": "raise RuntimeError('never imported')\n",
                "mlx_plugin_alpha/mlx-plugin.toml": _alpha_manifest(version),
            },
            metadata=["Summary: Alpha from the index"],
        )
        index.add("mlx-plugin-alpha", wheel, yanked=version == "1.3.0")
    beta_meta = [
        "Summary: Beta, described by its core metadata",
        "Keywords: features,mlx-plugin-type=feature_store",
    ]
    beta = build_wheel(
        wheels, "mlx-plugin-beta", "0.3.0", {"mlx_plugin_beta.py": ""}, metadata=beta_meta
    )
    with zipfile.ZipFile(beta) as zf:
        beta_metadata = zf.read("mlx_plugin_beta-0.3.0.dist-info/METADATA").decode()
    index.add("mlx-plugin-beta", beta, metadata=beta_metadata)
    gamma = build_wheel(
        wheels,
        "mlx-plugin-gamma",
        "1.0.0",
        {"mlx_gamma.py": ""},
        entry_points={"gamma_tracker": "mlx_gamma:GammaTracker"},
        metadata=["Summary: Gamma", "Keywords: mlx-plugin-type=experiment_tracker"],
    )
    index.add("mlx-plugin-gamma", gamma)
    old = build_wheel(
        wheels, "mlx-plugin-oldpy", "1.0.0", {"x.py": ""}, metadata=["Requires-Python: >=9.0"]
    )
    index.add("mlx-plugin-oldpy", old, requires_python=">=9.0")
    native = build_wheel(wheels, "mlx-plugin-native", "1.0.0", {"y.py": ""}, tag="cp27-cp27m-win32")
    index.add("mlx-plugin-native", native)
    corrupt = wheels / "mlx_plugin_corrupt-1.0.0-py3-none-any.whl"
    corrupt.write_bytes(b"this is not a zip file")
    index.add("mlx-plugin-corrupt", corrupt)
    tampered = build_wheel(wheels, "mlx-plugin-tampered", "1.0.0", {"z.py": ""})
    index.add("mlx-plugin-tampered", tampered, sha256="0" * 64)
    sdist = wheels / "mlx-plugin-sdistonly-1.0.0.tar.gz"
    sdist.write_bytes(b"not read")
    index.add("mlx-plugin-sdistonly", sdist)
    badtoml = build_wheel(
        wheels, "mlx-plugin-badtoml", "1.0.0", {"mlx_badtoml/mlx-plugin.toml": "name = [oops\n"}
    )
    index.add("mlx-plugin-badtoml", badtoml)
    index.projects["mlx-plugin-gone"] = []
    other = build_wheel(wheels, "requests-but-not-a-plugin", "9.9.9", {"r.py": ""})
    index.add("requests-but-not-a-plugin", other)


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_package_index_lists_newest_mlx_plugin_projects(
    serve, tmp_path: Path, json_api: bool
) -> None:
    with Index(tmp_path / "files", json_api=json_api) as index:
        (tmp_path / "files").mkdir()
        fill_index(index, tmp_path / "wheels")
        srv = serve(plugin_index_url=index.url)
        with srv.client() as client:
            data = discover(client, sources="pypi", auto_register="true")
            requests_first = Counter(index.requests)
            again = discover(client, sources="pypi")

    found = by_name(data, "pypi")
    listed = {n: p for n, p in found.items() if not p["installed"]}
    assert set(listed) == {"index_alpha", "beta", "gamma_tracker", "oldpy", "native"}
    alpha = listed["index_alpha"]
    assert alpha["version"] == "1.2.0"  # not the yanked 1.3.0, not the pre-release
    assert alpha["type"] == "data_source"
    assert alpha["description"] == "index_alpha for discovery tests"
    assert alpha["location"].endswith("/files/mlx_plugin_alpha-1.2.0-py3-none-any.whl")
    assert alpha["compatible"] is True
    assert alpha["auto_registered"] is False  # not installed: nothing to register
    assert listed["beta"]["type"] == "feature_store"
    assert listed["beta"]["version"] == "0.3.0"
    assert listed["beta"]["description"] == "Beta, described by its core metadata"
    assert listed["gamma_tracker"]["type"] == "experiment_tracker"
    assert listed["gamma_tracker"]["class_path"] == "mlx_gamma.GammaTracker"
    assert "needs Python >=9.0" in listed["oldpy"]["incompatible_reason"]
    assert (
        "no wheel of mlx-plugin-native 1.0.0 installs here"
        in listed["native"]["incompatible_reason"]
    )
    # the installed ones, and only those: the example plugins, and whatever plugin package
    # this venv holds besides (the example package's README installs one)
    installed = {n for n, p in found.items() if p["installed"]}
    assert BUILTIN <= installed
    assert {n for n, p in found.items() if p["auto_registered"]} == installed
    assert data["discovery_summary"]["auto_registered"] == len(installed)

    assert "not a wheel" in errors_about(data, "mlx-plugin-corrupt")[0]["message"]
    assert "sha256 does not match" in errors_about(data, "mlx_plugin_tampered")[0]["message"]
    assert "no wheel" in errors_about(data, "mlx-plugin-sdistonly")[0]["message"]
    assert "HTTP 404" in errors_about(data, "mlx-plugin-gone")[0]["message"]
    [bad_toml] = errors_about(data, "mlx_plugin_badtoml")
    assert "mlx_badtoml/mlx-plugin.toml: not valid TOML" in bad_toml["message"]
    assert len(data["errors"]) == 5, data["errors"]
    assert not any("requests" in str(e) for e in data["errors"])

    # Beta's core metadata was enough (PEP 658): its wheel was never downloaded.
    assert requests_first["/files/mlx_plugin_beta-0.3.0-py3-none-any.whl.metadata"] == 1
    assert requests_first["/files/mlx_plugin_beta-0.3.0-py3-none-any.whl"] == 0
    assert requests_first["/files/mlx_plugin_alpha-1.2.0-py3-none-any.whl"] == 1
    assert requests_first["/files/mlx_plugin_alpha-1.0.0-py3-none-any.whl"] == 0
    # Later scans read the index pages only: what a wheel said is cached by its hash.
    later = index.requests - requests_first
    assert later["/simple/"] == 1
    assert not any(
        path.startswith("/files/") and "corrupt" not in path and "tampered" not in path
        for path in later
    ), later
    assert {p["name"] for p in again["discovered_plugins"] if not p["installed"]} == set(listed)


@pytest.mark.process  # the service's own PYTHONPATH
def test_an_installed_plugin_is_listed_once_and_an_unreachable_index_is_an_error(
    serve, tmp_path: Path
) -> None:
    site = installed_wheel(tmp_path)
    with Index(tmp_path / "files", json_api=True) as index:
        (tmp_path / "files").mkdir()
        newer = build_wheel(
            tmp_path / "wheels",
            "mlx-plugin-wheeltest",
            "3.1.0",
            {"mlx_wheel_plugins.py": WHEEL_PLUGINS},
            entry_points={"wheel_echo": "mlx_wheel_plugins:WheelEcho"},
        )
        index.add("mlx-plugin-wheeltest", newer)
        srv = serve(pythonpath=(site,), plugin_index_url=index.url)
        with srv.client() as client:
            data = discover(client, sources="pypi")
        echoes = [p for p in data["discovered_plugins"] if p["name"] == "wheel_echo"]
        assert len(echoes) == 1
        assert echoes[0]["installed"] is True
        assert data["errors"] == []

    dead = f"http://127.0.0.1:{free_port()}/simple/"
    (tmp_path / "empty").mkdir()
    srv = serve(plugin_index_url=dead, plugin_path=str(tmp_path / "empty"))
    with srv.client() as client:
        data = discover(client)
    assert BUILTIN <= set(by_name(data, "pypi"))
    [error] = errors_about(data, dead)
    assert error["source"] == "pypi"
    assert "unreachable" in error["message"]


# ---------------------------------------------------------------------------- git


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    commit(path, files, "first")
    return path


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        write(repo / name, text)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def git_cache(srv: LiveServer) -> list[Path]:
    return sorted(p for p in (srv.home / "cache" / "git").iterdir() if p.is_dir())


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_repositories_are_cloned_refreshed_and_not_fetched_when_unchanged(
    serve, tmp_path: Path
) -> None:
    main = make_repo(
        tmp_path / "repos" / "main",
        {
            "mlx-plugin.toml": toml_manifest("git_echo", "1.0.0"),
            "second/mlx-plugin.toml": toml_manifest("git_second", "0.1.0"),
            "broken/mlx-plugin.toml": "name = [\n",
            "README.md": "plugins",
        },
    )
    tagged = make_repo(
        tmp_path / "repos" / "tagged", {"mlx-plugin.toml": toml_manifest("git_tagged", "1.0.0")}
    )
    git("tag", "v1", cwd=tagged)
    commit(tagged, {"mlx-plugin.toml": toml_manifest("git_tagged", "2.0.0")}, "after the tag")
    empty = make_repo(tmp_path / "repos" / "empty", {"README.md": "no plugins here"})
    missing = tmp_path / "repos" / "missing"
    repos = f"file://{main}, file://{tagged}@v1\n file://{missing} file://{empty}"
    srv = serve(plugin_git_repos=repos)
    with srv.client() as client:
        first = discover(client, sources="git", auto_register="true")
        found = by_name(first)
        assert set(found) == {"git_echo", "git_second", "git_tagged"}
        assert found["git_echo"]["version"] == "1.0.0"
        assert found["git_echo"]["source"] == "git"
        assert found["git_echo"]["location"].startswith(f"file://{main} (")
        assert found["git_echo"]["location"].endswith(") mlx-plugin.toml")
        assert found["git_second"]["location"].endswith(f"second{os.sep}mlx-plugin.toml")
        assert found["git_tagged"]["version"] == "1.0.0"  # the ref, not the branch's tip
        assert found["git_echo"]["auto_registered"] is True
        assert "not valid TOML" in errors_about(first, "broken")[0]["message"]
        assert errors_about(first, str(missing))[0]["source"] == "git"
        assert "no mlx-plugin.toml" in errors_about(first, str(empty))[0]["message"]
        assert len(first["errors"]) == 3, first["errors"]
        caches = git_cache(srv)
        assert len(caches) == 3  # main, tagged, empty; nothing for the missing one

        # A second commit changes the version: the next scan fetches it.
        sha = commit(main, {"mlx-plugin.toml": toml_manifest("git_echo", "1.1.0")}, "bump")
        second = discover(client, sources="git")
        assert by_name(second)["git_echo"]["version"] == "1.1.0"
        assert by_name(second)["git_echo"]["already_registered"] is False
        assert sha[:12] in by_name(second)["git_echo"]["location"]
        assert by_name(second)["git_tagged"]["version"] == "1.0.0"
        main_cache = next(c for c in caches if git("rev-parse", "HEAD", cwd=c) == sha)
        fetch_head = main_cache / ".git" / "FETCH_HEAD"
        assert fetch_head.is_file()
        stamp = fetch_head.stat().st_mtime_ns
        log_before = srv.log_text()
        assert f"git file://{main}: fetched at {sha[:12]} (1 fetch)" in log_before

        # Nothing changed: a ref check, no fetch.
        third = discover(client, sources="git")
        assert by_name(third)["git_echo"]["version"] == "1.1.0"
        assert fetch_head.stat().st_mtime_ns == stamp
        new_log = srv.log_text()[len(log_before) :]
        assert f"git file://{main}: unchanged at {sha[:12]} (0 fetches)" in new_log
        assert f"git file://{tagged}@v1: unchanged" in new_log
        assert "fetched" not in new_log and "cloned" not in new_log

        # The remote goes away: the cached manifests are still reported, with an error.
        shutil.rmtree(main)
        fourth = discover(client, sources="git")
        assert by_name(fourth)["git_echo"]["version"] == "1.1.0"
        assert "showing the cached commit" in errors_about(fourth, f"file://{main}")[0]["message"]


# ---------------------------------------------------------------------------- namespace


@pytest.mark.process  # the service's own PYTHONPATH
def test_namespace_packages_are_read_from_source_never_imported(serve, tmp_path: Path) -> None:
    log = tmp_path / "ns_imports.log"
    one, two = tmp_path / "ns_one", tmp_path / "ns_two"
    write(
        one / "mlx_plugins" / "alpha.py",
        IMPORT_LOGGER + "from mlx_platform.plugins import Plugin as Base\n"
        "from mlx_test_plugins import EchoPlugin\n\n\n"
        "class AlphaPlugin(Base):\n"
        '    """Alpha, found in a namespace package."""\n\n'
        '    name = "ns_alpha"\n'
        '    type = "data_source"\n'
        '    version = "1.4.0"\n'
        '    metadata = {"capabilities": ["echo"], "platform_api": ">=1.0,<2"}\n\n\n'
        "class _PrivateHelper(Base):\n    pass\n\n\n"
        "class NotAPlugin:\n    name = 'nope'\n",
    )
    write(
        one / "mlx_plugins" / "deep" / "nested" / "beta.py",
        IMPORT_LOGGER + "import mlx_platform.plugins as mp\n\n\n"
        "class Beta(mp.Plugin):\n"
        '    """Beta lives two folders down."""\n\n'
        '    version: str = "0.2.0"\n'
        '    metadata = {"supported_platforms": ["plan9"]}\n',
    )
    write(
        two / "mlx_plugins" / "gamma.py",
        IMPORT_LOGGER + "from mlx_plugins.alpha import AlphaPlugin\n\n\n"
        "class GammaPlugin(AlphaPlugin):\n"
        '    name = "ns_gamma"\n',
    )
    write(two / "mlx_plugins" / "broken.py", "class Broken(:\n")
    write(
        two / "mlx_plugins" / "computed.py",
        "import random\nfrom mlx_platform.plugins import Plugin\n\n\n"
        "class Computed(Plugin):\n    version = str(random.random())\n",
    )
    write(
        two / "mlx_plugins" / "abstract.py",
        "import abc\nfrom mlx_platform.plugins import Plugin\n\n\n"
        "class Template(Plugin):\n    @abc.abstractmethod\n    def query(self): ...\n",
    )
    srv = serve(pythonpath=(one, two), test_import_log=str(log))
    with srv.client() as client:
        data = discover(client, sources="filesystem", include_namespace="mlx_plugins")
        assert not log.exists()  # read as text: nothing was imported, anywhere
        data = discover(
            client, sources="filesystem", include_namespace="mlx_plugins", auto_register="true"
        )
        found = by_name(data, "namespace")
        assert set(found) == {"ns_alpha", "beta", "ns_gamma"}
        alpha = found["ns_alpha"]
        assert alpha["class_path"] == "mlx_plugins.alpha.AlphaPlugin"
        assert alpha["version"] == "1.4.0"
        assert alpha["description"] == "Alpha, found in a namespace package."
        alpha_py = one / "mlx_plugins" / "alpha.py"
        line = alpha_py.read_text().splitlines().index("class AlphaPlugin(Base):") + 1
        assert alpha["location"] == f"{alpha_py}:{line}"
        assert alpha["compatible"] is True
        assert found["beta"]["class_path"] == "mlx_plugins.deep.nested.beta.Beta"
        assert found["beta"]["type"] == "generic"
        assert found["beta"]["version"] == "0.2.0"
        assert "plan9" in found["beta"]["incompatible_reason"]
        assert found["ns_gamma"]["type"] == "data_source"  # inherited from AlphaPlugin
        assert found["ns_gamma"]["version"] == "1.4.0"
        assert "not valid Python" in errors_about(data, "broken.py")[0]["message"]
        assert "computed at import time" in errors_about(data, "computed.py")[0]["message"]
        assert len(data["errors"]) == 2, data["errors"]
        # Registering ns_alpha imported it: in a throwaway process, as registration does.
        assert alpha["auto_registered"] is True
        assert registered_names(client)["ns_alpha"]["status"] == "registered"
        pids = {line.split()[0] for line in log.read_text().splitlines()}
        assert str(srv.process.pid) not in pids

        assert_error(
            client.get("/v1/plugins/discover", params={"include_namespace": "not a package!"}),
            422,
            "VALIDATION_ERROR",
        )
        nothing = discover(client, sources="filesystem", include_namespace="mlx_no_such_namespace")
        assert nothing["discovered_plugins"] == []
        assert "no package 'mlx_no_such_namespace'" in nothing["errors"][0]["message"]
