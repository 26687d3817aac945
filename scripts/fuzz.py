"""`make fuzz`: schemathesis over the whole OpenAPI document of a real `mlx serve`.

Starts the service on a free port of 127.0.0.1 with a fresh MLX_HOME (SQLite, the example
plugins, no write rate limit), mints an admin token with `mlx token create`, runs
`st run <url>/openapi.json --checks not_a_server_error` with it, and stops the service.
Exits with schemathesis' exit code: non-zero when it found a server error (any 5xx), or when
the service logged a traceback although every answer was fine.

    python scripts/fuzz.py [schemathesis options...]   e.g. --max-examples 200 --seed 1

The service's log is kept at the path printed at the end (MLX_HOME is removed unless
FUZZ_KEEP=1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PYTHON = sys.executable
CONFIG = Path(__file__).resolve().with_name("fuzz.toml")
# What a run does unless told otherwise: every phase, every operation, 2 workers (the
# machines this runs on have 2 cores, shared with the service).
DEFAULT_ARGS = ["--max-examples", "50", "--workers", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env.update(MLX_HOME=str(home), MLX_WRITE_RATE_LIMIT="off")
    return env


def start(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = service_env(home)
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "mlx_platform.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        # relative paths in fuzzed configurations land in the throwaway home
        cwd=home,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fuzz: the service exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"fuzz: the service did not become ready in 60 s; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def admin_token(home: Path) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "mlx_platform.cli.main", "token", "create", "--subject", "fuzz"]
        + ["--scope", "plugins:admin", "--ttl", "86400"],
        env=service_env(home),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main(argv: list[str]) -> int:
    st = shutil.which("st", path=str(Path(PYTHON).parent)) or shutil.which("st")
    if st is None:
        print('fuzz: schemathesis is not installed: pip install -e ".[fuzz]"', file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="mlx-fuzz-")) / "home"
    home.mkdir(mode=0o700)
    log = Path(tempfile.gettempdir()) / f"mlx-fuzz-{os.getpid()}.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(home, port, log)
    try:
        token = admin_token(home)
        command = [
            st,
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {token}",
            "--output-sanitize",
            "true",
            *(argv or DEFAULT_ARGS),
        ]
        print(
            "fuzz:",
            " ".join(
                c if not c.startswith("Authorization") else "Authorization: ***" for c in command
            ),
            flush=True,
        )
        code = subprocess.run(command, cwd=home.parent, check=False).returncode
    finally:
        stop(proc)
        if os.environ.get("FUZZ_KEEP") != "1":
            shutil.rmtree(home.parent, ignore_errors=True)
    tracebacks = log.read_text(errors="replace").count("Traceback (most recent call last)")
    print(f"fuzz: service log {log} ({tracebacks} tracebacks); schemathesis exit code {code}")
    if code == 0 and tracebacks:
        print("fuzz: the service logged tracebacks: see its log", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
