"""`mlx serve` finds a busy port before it changes anything (issue 14): one line, a non-zero
exit, and no home, database, secret or admin token made (nothing migrated, seeded or
printed)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import clean_env, mlx_cli


def test_a_busy_port_stops_serve_before_any_state_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = mlx_cli(
            "serve",
            "--host",
            "127.0.0.1",
            env=clean_env(MLX_HOME=str(home), MLX_PORT=str(port)),
            check=False,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""  # no token printed, no address announced
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} is in use on 127.0.0.1"), line
    assert "--port or MLX_PORT" in line
    assert not home.exists()  # nothing migrated, seeded, or kept


def test_a_host_it_cannot_listen_on_is_one_line_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = mlx_cli(
        "serve",
        "--host",
        "192.0.2.1",  # TEST-NET-1: no interface of this machine has it
        "--port",
        "0",
        env=clean_env(MLX_HOME=str(home)),
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot listen on 192.0.2.1:0: "), line
    assert proc.stdout == "" and not home.exists()
