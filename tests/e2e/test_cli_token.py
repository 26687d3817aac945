"""`mlx token create` signs with the server's secret, or refuses (issue 14): with an MLX_HOME
that holds no secret it names that home and exits 2, creating nothing; `--new-secret` creates
one there, and a service started on that home accepts the token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import LiveServer, clean_env, forked_mlx

CREATE = ["token", "create", "--subject", "someone", "--scope", "plugins:read"]


def test_a_home_without_a_secret_is_refused_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    proc = forked_mlx(CREATE, clean_env(MLX_HOME=str(home)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: no server secret in MLX_HOME {home} ")
    assert "--new-secret" in line
    assert not home.exists()  # nothing made: no folder, no secret


def test_new_secret_creates_one_that_a_service_on_that_home_accepts(
    tmp_path: Path, server_factory: Callable[..., LiveServer]
) -> None:
    home = tmp_path / "home"
    proc = forked_mlx([*CREATE, "--new-secret"], clean_env(MLX_HOME=str(home)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    token = proc.stdout.strip()
    assert proc.stdout == token + "\n"
    assert proc.stderr.strip() == f"created a new server secret: {home / 'jwt.secret'}"
    assert (home / "jwt.secret").stat().st_mode & 0o077 == 0

    # the next token uses the same secret, without --new-secret, and says nothing
    again = forked_mlx(CREATE, clean_env(MLX_HOME=str(home)))
    assert again.returncode == 0 and again.stderr == ""

    server = server_factory(home=home)
    with server.client(token=token) as client:
        assert client.get("/v1/plugins").status_code == 200
    with server.client(token=again.stdout.strip()) as client:
        assert client.get("/v1/plugins").status_code == 200


def test_a_secret_in_the_environment_needs_no_home(tmp_path: Path) -> None:
    home = tmp_path / "none"
    env = clean_env(MLX_HOME=str(home), MLX_JWT_SECRET="a-signing-secret-of-the-service-0123456789")
    proc = forked_mlx(CREATE, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(".") == 2 and not home.exists()
