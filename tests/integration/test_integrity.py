"""The code a plugin was registered with is pinned (issue 11, "Integrity").

Registration records the sha256 of the plugin's files (its package folder or module in a
plugin folder, or the files an installed distribution's RECORD lists); activation refuses a
plugin whose files changed since, with 409 PLUGIN_CODE_CHANGED naming a changed, added or
removed file, until it is registered again; a restart of a running plugin (its worker died)
refuses changed code too. Against an in-process service with real worker processes; the
plugin code lives in folders this test writes (MLX_PLUGIN_PATH), and the distribution is a
real wheel installed by pip.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, poll

PLUGIN_SOURCE = """
from mlx_platform.plugins import Plugin, operation

from {package}.helper import answer


class PinnedPlugin(Plugin):
    def health_check(self) -> dict:
        return {{"status": "healthy", "message": "ok"}}

    @operation
    def value(self) -> int:
        return answer()

    @operation
    def pid(self) -> int:
        import os

        return os.getpid()
"""


def write_package(folder: Path, package: str) -> Path:
    pkg = folder / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SOURCE.format(package=package))
    (pkg / "helper.py").write_text("def answer() -> int:\n    return 1\n")
    (pkg / "data.json").write_text('{"table": "users"}\n')
    return pkg


def body(name: str, class_path: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "data_source",
        "version": "1.0.0",
        "description": "pinned code",
        "class_path": class_path,
        "configuration_schema": {},
        "metadata": {},
    }


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    return folder


@pytest.fixture
def server(server_factory, plugin_dir: Path) -> LiveServer:
    # isolation "" (each plugin's own: process): code in a plugin folder runs in a worker
    return server_factory(plugin_path=str(plugin_dir), reconcile_interval="0.2", isolation="")


def activate(client: httpx.Client, pid: str, **params: str) -> httpx.Response:
    return client.post(f"/v1/plugins/{pid}/activate", json={"configuration": {}}, params=params)


def test_activation_refuses_changed_code_until_registered_again(
    server: LiveServer, plugin_dir: Path
) -> None:
    package = f"mlx_pinned_{uuid.uuid4().hex[:8]}"
    pkg = write_package(plugin_dir, package)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"not pinned")
    name = f"pinned_{uuid.uuid4().hex[:8]}"
    with server.client() as admin, server.client(scopes=("plugins:read",)) as reader:
        r = admin.post("/v1/plugins", json=body(name, f"{package}.PinnedPlugin"))
        assert r.status_code == 201, r.text
        pid = r.json()["data"]["id"]
        digest = reader.get(f"/v1/plugins/{pid}").json()["data"]["code_digest"]
        assert digest == {
            "algorithm": "sha256",
            "source": "package",
            "root": str(plugin_dir.resolve()),
            "files": 3,  # __init__.py, helper.py, data.json: not __pycache__
        }, digest

        # unchanged code activates; a .pyc written meanwhile changes nothing
        assert activate(admin, pid).status_code == 200
        (pkg / "__pycache__" / "other.cpython-311.pyc").write_bytes(b"compiled")
        assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200
        assert activate(admin, pid).status_code == 200
        assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200

        # a changed file: refused (dry run too), naming it; nothing changes
        (pkg / "helper.py").write_text("def answer() -> int:\n    return 2  # swapped\n")
        for params in ({"dry_run": "true"}, {}):
            err = assert_error(activate(admin, pid, **params), 409, "PLUGIN_CODE_CHANGED")
            assert f"{package}/helper.py changed" in err["message"], err
            assert "register the plugin again" in err["message"], err
            assert err["details"]["changed_files"] == [f"{package}/helper.py"], err
        assert reader.get(f"/v1/plugins/{pid}").json()["data"]["status"] == "inactive"

        # an added and a removed file are named too
        (pkg / "extra.py").write_text("X = 1\n")
        (pkg / "data.json").unlink()
        err = assert_error(activate(admin, pid), 409, "PLUGIN_CODE_CHANGED")
        assert err["details"]["added_files"] == [f"{package}/extra.py"], err
        assert err["details"]["removed_files"] == [f"{package}/data.json"], err
        assert err["details"]["counts"] == {"changed": 1, "added": 1, "removed": 1}, err

        # registering it again (same name and version) pins the new code: same id
        r = admin.post("/v1/plugins", json=body(name, f"{package}.PinnedPlugin"))
        assert r.status_code == 201, r.text
        assert r.json()["data"]["id"] == pid
        assert reader.get(f"/v1/plugins/{pid}").json()["data"]["code_digest"]["files"] == 3
        # ... but the same code again is a duplicate, as before
        assert_error(
            admin.post("/v1/plugins", json=body(name, f"{package}.PinnedPlugin")),
            409,
            "PLUGIN_ALREADY_EXISTS",
        )
        assert activate(admin, pid).status_code == 200
        r = admin.post(f"/v1/plugins/{pid}/invoke", json={"operation": "value"})
        assert r.json()["data"]["result"] == 2, r.text

        # an active plugin is not re-registered under its feet
        (pkg / "helper.py").write_text("def answer() -> int:\n    return 3\n")
        assert_error(
            admin.post("/v1/plugins", json=body(name, f"{package}.PinnedPlugin")),
            409,
            "INVALID_STATE",
        )


def test_a_restart_of_a_running_plugin_refuses_changed_code(
    server: LiveServer, plugin_dir: Path
) -> None:
    """The worker of an active plugin dies after its code was changed: the reconciler does
    not start the changed code; the plugin shows `error` with the reason."""
    module = f"mlx_pinned_mod_{uuid.uuid4().hex[:8]}"
    path = plugin_dir / f"{module}.py"
    path.write_text(PLUGIN_SOURCE.replace("from {package}.helper import answer", "").format())
    with server.client() as admin:
        r = admin.post("/v1/plugins", json=body(f"mod_{module[-8:]}", f"{module}.PinnedPlugin"))
        assert r.status_code == 201, r.text
        pid = r.json()["data"]["id"]
        digest = admin.get(f"/v1/plugins/{pid}").json()["data"]["code_digest"]
        assert digest["source"] == "module" and digest["files"] == 1, digest
        assert activate(admin, pid).status_code == 200
        worker = admin.post(f"/v1/plugins/{pid}/invoke", json={"operation": "pid"}).json()
        path.write_text(path.read_text() + "\nSWAPPED = True\n")
        os.kill(worker["data"]["result"], signal.SIGKILL)
        data = poll(
            lambda: admin.get(f"/v1/plugins/{pid}").json()["data"],
            lambda d: d["status"] == "error" and "code changed" in (d["status_reason"] or ""),
            timeout=20,
            what="the restart refused",
        )
        assert f"{module}.py changed" in data["status_reason"], data


def _wheel(folder: Path, dist: str, package: str) -> Path:
    """A real wheel of `package` (a plugin), built by hand (no build backend offline)."""
    files = {
        f"{package}/__init__.py": PLUGIN_SOURCE.format(package=package).encode(),
        f"{package}/helper.py": b"def answer() -> int:\n    return 1\n",
        f"{dist}-1.0.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n"
        ).encode(),
        f"{dist}-1.0.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{dist}-1.0.0.dist-info/RECORD,,")
    path = folder / f"{dist}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
        zf.writestr(f"{dist}-1.0.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_a_plugin_from_an_installed_distribution_is_pinned_by_its_record(
    server: LiveServer, plugin_dir: Path, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    dist, package = f"mlx_wheel_plugin_{suffix}", f"mlx_wheel_pkg_{suffix}"
    wheel = _wheel(tmp_path, dist, package)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + ["--no-compile", "--target", str(plugin_dir), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with server.client() as admin:
        r = admin.post("/v1/plugins", json=body(f"wheel_{suffix}", f"{package}.PinnedPlugin"))
        assert r.status_code == 201, r.text
        pid = r.json()["data"]["id"]
        digest = admin.get(f"/v1/plugins/{pid}").json()["data"]["code_digest"]
        assert digest["source"] == "distribution", digest
        assert digest["distribution"] == dist and digest["distribution_version"] == "1.0.0"
        assert digest["root"] == str(plugin_dir.resolve())
        # every file RECORD lists with a hash: the two modules, METADATA, WHEEL and what pip
        # adds with one (INSTALLER, REQUESTED...); not RECORD itself
        assert digest["files"] >= 4, digest
        assert "modified_since_install" not in digest

        (plugin_dir / package / "helper.py").write_text("def answer() -> int:\n    return 9\n")
        err = assert_error(activate(admin, pid), 409, "PLUGIN_CODE_CHANGED")
        assert err["details"]["changed_files"] == [f"{package}/helper.py"], err
        assert f"{package}/helper.py changed" in err["message"], err
