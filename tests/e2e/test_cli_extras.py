"""`mlx` with only some of the package's extras installed (issue 14): one line naming the
extra to install and every module missing, never a traceback. The missing packages are
hidden for real: a folder in front of PYTHONPATH holds a package of each name whose import
raises ModuleNotFoundError, as a package that is not installed does."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from mlx_platform.cli.extras import CLI_MODULES, SERVER_MODULES
from tests.conftest import clean_env, free_port, mlx_cli


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_modules(extra: str) -> set[str]:
    """The top-level modules of the distributions the extra `extra` adds (from the installed
    package's metadata), without those of the other extras it includes."""
    wanted = set()
    for requirement in metadata.requires("mlx-platform") or []:
        if f'extra == "{extra}"' in requirement:
            name = _normal(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))  # type: ignore[union-attr]
            if name != "mlx-platform":
                wanted.add(name)
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if any(_normal(d) in wanted for d in dists) and not module.startswith("_")
    }


def hide(folder: Path, modules: set[str]) -> str:
    """A PYTHONPATH on which `modules` cannot be imported."""
    for name in modules:
        package = folder / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n"
        )
    return str(folder)


def run(pythonpath: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(MLX_HOME=str(home), MLX_PORT=str(free_port()))
    env["PYTHONPATH"] = pythonpath + ":" + env["PYTHONPATH"]
    return mlx_cli(*args, env=env, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cli_only(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Only the cli extra: every module the server extra adds is hidden."""
    return hide(tmp_path_factory.mktemp("cli_only"), extra_modules("server"))


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> str:
    """No extra at all."""
    modules = extra_modules("server") | extra_modules("cli")
    return hide(tmp_path_factory.mktemp("bare"), modules)


def test_the_lists_are_the_extras_modules() -> None:
    assert set(CLI_MODULES) <= extra_modules("cli")
    assert set(SERVER_MODULES) <= extra_modules("server")
    # what is left out runs without them (PostgreSQL driver, uvicorn's speedups)
    assert extra_modules("server") - set(SERVER_MODULES) <= {"psycopg", "uvloop", "httptools"}


@pytest.mark.parametrize(
    "args",
    [
        ["token", "create", "--subject", "s", "--scope", "plugins:read", "--new-secret"],
        ["migrate"],
        ["plugins", "check", "."],
    ],
    ids=["token create", "migrate", "plugins check"],
)
def test_with_the_cli_extra_only_server_commands_say_what_to_install(
    cli_only: str, tmp_path: Path, args: list[str]
) -> None:
    proc = run(cli_only, *args, home=tmp_path / "home")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    line = one_line(proc)
    assert line.startswith("error: mlx ")
    assert 'needs the server extra: pip install "mlx-platform[server]"; missing: ' in line
    assert not (tmp_path / "home").exists()


def test_with_the_cli_extra_only_serve_names_every_missing_module(
    cli_only: str, tmp_path: Path
) -> None:
    proc = run(cli_only, "serve", home=tmp_path / "home")
    assert proc.returncode == 1 and proc.stdout == ""
    line = one_line(proc)
    assert line.startswith('error: mlx serve needs the server extra: pip install "mlx-platform')
    assert line.split("; missing: ")[1].split(", ") == list(SERVER_MODULES)


def test_with_the_cli_extra_only_the_client_commands_run(cli_only: str, tmp_path: Path) -> None:
    proc = run(cli_only, "--version", home=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("mlx-platform ")
    proc = run(cli_only, "plugins", "list", home=tmp_path)  # no token: refused before a request
    assert proc.returncode == 2 and "MLX_API_TOKEN" in one_line(proc)


def test_a_bare_install_names_every_missing_extra_at_once(bare: str, tmp_path: Path) -> None:
    proc = run(bare, "serve", home=tmp_path / "home")
    assert proc.returncode == 1 and proc.stdout == ""
    line = one_line(proc)
    assert line.startswith(
        'mlx: mlx serve needs the cli and server extras: pip install "mlx-platform[server]" '
        "(it includes the cli); missing: "
    ), line
    assert line.split("; missing: ")[1].split(", ") == [*CLI_MODULES, *SERVER_MODULES]

    proc = run(bare, "plugins", "list", home=tmp_path / "home")
    assert proc.returncode == 1
    assert one_line(proc) == (
        'mlx: the command line needs the cli extra: pip install "mlx-platform[cli]" '
        '(or "mlx-platform[server]" for the service too); missing: typer, rich'
    )
