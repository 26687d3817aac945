"""A live service for a plugin's tests: `mlx serve` in a process of its own on a free
127.0.0.1 port, with a home of its own, ready when this returns (its /healthz answers).

The plugin's folders are in its MLX_PLUGIN_PATH from the start: the service reads
MLX_PLUGIN_PATH when it starts (its workers and class checks import from those folders), so
setting it later changes nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlx_platform.sdk import MLXClient
    from mlx_platform.wire import ActivateResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveService:
    """A running `mlx serve`: its URL, home, admin token and an SDK client; `plugin_id` is
    the plugin `register` registered last, which `activate`, `invoke` and `deactivate` use."""

    def __init__(
        self, url: str, home: Path, process: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        self.url, self.home, self.process, self.log_path = url, home, process, log_path
        self.plugin_id: str | None = None
        self._client: MLXClient | None = None

    @property
    def token(self) -> str:
        """The admin token the service wrote into its home (scope plugins:admin)."""
        return (self.home / "admin.token").read_text().strip()

    @property
    def client(self) -> MLXClient:
        """An SDK client with the admin token (closed when the service stops)."""
        if self._client is None:
            from mlx_platform.sdk import MLXClient

            self._client = MLXClient(api_token=self.token, base_url=self.url)
        return self._client

    def env(self) -> dict[str, str]:
        """MLX_API_URL and MLX_API_TOKEN for `mlx plugins` commands against this service."""
        return {"MLX_API_URL": self.url, "MLX_API_TOKEN": self.token}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---------------------------------------------------------------- the plugin

    def register(self, manifest: Mapping[str, Any] | str | Path) -> str:
        """Register a plugin (a manifest dict, or a `mlx-plugin.toml` path); its id."""
        if isinstance(manifest, str | Path):
            from mlx_platform.plugins import load_manifest

            manifest = load_manifest(manifest)
        result = self.client.plugins.register(dict(manifest))
        if not result.validation_results.class_loadable:
            raise AssertionError(
                f"the service cannot load the plugin's class: "
                f"{result.validation_results.class_error}"
            )
        self.plugin_id = result.id
        return result.id

    def _id(self, plugin_id: str | None) -> str:
        chosen = plugin_id or self.plugin_id
        if chosen is None:
            raise AssertionError("no plugin registered: call register() first")
        return chosen

    def activate(
        self, configuration: Mapping[str, Any] | None = None, *, plugin_id: str | None = None
    ) -> ActivateResult:
        """Activate the plugin with `configuration` (deactivated first if it is active)."""
        pid = self._id(plugin_id)
        if self.client.plugins.get(pid).status == "active":
            self.client.plugins.deactivate(pid, force=True)
        return self.client.plugins.activate(pid, configuration=dict(configuration or {}))

    def invoke(
        self,
        operation: str,
        /,
        timeout: float | None = None,
        plugin_id: str | None = None,
        **arguments: Any,
    ) -> Any:
        """POST /v1/plugins/{id}/invoke: the operation's result, or the API's error."""
        pid = self._id(plugin_id)
        return self.client.plugins.invoke(pid, operation, arguments, timeout=timeout).result

    def deactivate(self, *, plugin_id: str | None = None) -> None:
        self.client.plugins.deactivate(self._id(plugin_id), force=True)

    # ---------------------------------------------------------------- its end

    def stop(self) -> int:
        """Stop the service (SIGTERM: plugins stopped, workers ended); its exit code."""
        if self._client is not None:
            self._client.close()
            self._client = None
        return terminate(self.process)

    def __enter__(self) -> LiveService:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_service(
    home: Path,
    *,
    plugin_path: list[str | Path] | None = None,
    settings: Mapping[str, str] | None = None,
    python: str | None = None,
    timeout: float = 60.0,
) -> LiveService:
    """`mlx serve` on `home` (created), with `plugin_path` as MLX_PLUGIN_PATH and `settings`
    as more MLX_* variables (names without MLX_: {"health_timeout": "2"}); no MLX_* variable
    of this process reaches it, and the example plugins are not registered unless
    `seed_builtin_plugins` says so. `python`: the interpreter (default this one)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLX_")}
    env["MLX_HOME"] = str(home)
    env["MLX_SEED_BUILTIN_PLUGINS"] = "false"
    if plugin_path:
        env["MLX_PLUGIN_PATH"] = os.pathsep.join(str(p) for p in plugin_path)
    for key, value in (settings or {}).items():
        env[f"MLX_{key.upper()}"] = str(value)
    last = ""
    for _attempt in range(3):  # another process may take the free port before the service
        port = free_port()
        log_path = home.parent / f"{home.name}-service-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [python or sys.executable, "-m", "mlx_platform.cli.main", "serve"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(url, proc, timeout):
            return LiveService(url, home, proc, log_path)
        last = log_path.read_text(errors="replace")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            break  # it runs but never answered: trying again would not help
    raise RuntimeError(f"mlx serve did not become ready:\n{last}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def terminate(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """Stop a service process as an operator would (SIGTERM: plugins stopped, workers ended),
    killing it after `timeout` s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
