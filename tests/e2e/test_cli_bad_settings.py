"""A setting `mlx` cannot run with is one line naming the variable and the reason, never a
traceback, and nothing is made: no home, no secret, no admin token printed or written, no
database. Refused settings exit 2 (as every invalid setting does); a database that does not
answer, a home that cannot be made and a broken key kept in the home exit 1 (as a port in
use does).

`mlx serve` runs as a process of its own (a bad setting let through would start a service);
the other commands are forked (tests/conftest.py forked_mlx)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import clean_env, forked_mlx, mlx_cli

SERVE = ["serve", "--host", "127.0.0.1", "--port", "0"]
TOKEN = ["token", "create", "--subject", "a", "--scope", "plugins:read", "--new-secret"]
MIGRATE = ["migrate"]
# what a traceback prints: its title, and rich's frames (typer's pretty tracebacks)
TRACEBACK_MARKS = ("Traceback", "╭", "╰", "│", "❱")


def run(args: list[str], home: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(**{"MLX_HOME": str(home), **variables})
    if args[0] == "serve":
        return mlx_cli(*args, env=env, check=False)
    return forked_mlx(args, env)


def assert_one_line_naming(proc: subprocess.CompletedProcess[str], variable: str) -> str:
    both = proc.stdout + proc.stderr
    assert not [mark for mark in TRACEBACK_MARKS if mark in both], both
    assert proc.stdout == "", both  # no admin token, no address announced
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and variable in line, line
    return line


def the_cases(tmp: Path) -> dict[str, tuple[str, str, str]]:
    """name: (variable, value, what the line says)"""
    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    return {
        # the key of the bug report: base64 of 25 bytes, not Fernet's 32
        "secret_key": (
            "MLX_SECRET_KEY",
            "benchkeybenchkeybenchkeybenchkey12",
            "is not a Fernet key",
        ),
        "jwt_secret_too_short": ("MLX_JWT_SECRET", "short-secret", "needs at least 32"),
        "log_level": ("MLX_LOG_LEVEL", "LOUD", "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        "home_is_a_file": ("MLX_HOME", str(a_file), "is a file, not a folder"),
        "home_under_a_file": ("MLX_HOME", str(a_file / "home"), "no folder can be made in it"),
        "database_url_unknown_scheme": (
            "MLX_DATABASE_URL",
            "mysql://someone@127.0.0.1/mlx",
            "the service runs on PostgreSQL or SQLite",
        ),
        "database_url_not_a_url": ("MLX_DATABASE_URL", "not a url", "is not a database URL"),
        "database_url_unknown_driver": (
            "MLX_DATABASE_URL",
            "postgresql+nosuchdriver://someone@127.0.0.1/mlx",
            "names the driver 'nosuchdriver'",
        ),
        "database_url_in_memory": ("MLX_DATABASE_URL", "sqlite://", "in-memory"),
        "database_url_sqlite_folder_missing": (
            "MLX_DATABASE_URL",
            f"sqlite:///{tmp / 'no' / 'such' / 'mlx.db'}",
            "does not exist",
        ),
        # an in-process invocation without its own timeout failed (OverflowError)
        "invoke_timeout_inf": ("MLX_INVOKE_TIMEOUT", "inf", "should be a finite number"),
        "invoke_timeout_nan": ("MLX_INVOKE_TIMEOUT", "nan", "should be a finite number"),
        # the health round's thread died with a traceback (OverflowError)
        "health_interval_beyond_a_year": (
            "MLX_HEALTH_INTERVAL",
            "1e300",
            "must be at most 31536000 seconds (a year)",
        ),
        # every request of the admin token answered 500 (its exp beyond a float)
        "admin_token_ttl_huge": (
            "MLX_ADMIN_TOKEN_TTL",
            "1" + "0" * 400,
            "must be at most 3153600000 seconds (100 years)",
        ),
        # every discovery of the pypi source failed
        "plugin_index_url_not_http": (
            "MLX_PLUGIN_INDEX_URL",
            "ftp://example.org/simple/",
            "must be the http:// or https:// URL of a package index's simple API",
        ),
    }


CASE_NAMES = [
    "secret_key",
    "jwt_secret_too_short",
    "log_level",
    "home_is_a_file",
    "home_under_a_file",
    "database_url_unknown_scheme",
    "database_url_not_a_url",
    "database_url_unknown_driver",
    "database_url_in_memory",
    "database_url_sqlite_folder_missing",
    "invoke_timeout_inf",
    "invoke_timeout_nan",
    "health_interval_beyond_a_year",
    "admin_token_ttl_huge",
    "plugin_index_url_not_http",
]
# every case against `mlx serve` and `mlx migrate`, and `mlx token create` but for the
# database URL (it reads no database)
RUNS = [
    (case, args)
    for case in CASE_NAMES
    for args in ([SERVE, MIGRATE] if case.startswith("database_url") else [SERVE, MIGRATE, TOKEN])
]


@pytest.mark.parametrize(("case", "args"), RUNS, ids=[f"{c}-{a[0]}" for c, a in RUNS])
def test_a_refused_setting_is_one_line_exit_2_and_nothing_made(
    tmp_path: Path, case: str, args: list[str]
) -> None:
    cases = the_cases(tmp_path)
    assert sorted(cases) == sorted(CASE_NAMES)
    variable, value, says = cases[case]
    home = tmp_path / "home"
    if variable == "MLX_HOME":
        home = Path(value)
    proc = run(args, home, **{variable: value})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = assert_one_line_naming(proc, variable)
    assert line.startswith(f"error: invalid settings: {variable}: "), line
    assert says in line, line
    if variable != "MLX_HOME":
        assert not home.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no database either


def test_a_token_lifetime_beyond_100_years_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run([*TOKEN, "--ttl", str(100 * 365 * 86400 + 1)], home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = assert_one_line_naming(proc, "--ttl")
    assert line == "error: --ttl must be at most 3153600000 seconds (100 years)", line
    assert not home.exists()


def test_a_bad_secret_key_says_how_to_make_a_good_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run(SERVE, home, MLX_SECRET_KEY="benchkeybenchkeybenchkeybenchkey12")
    assert proc.returncode == 2
    line = assert_one_line_naming(proc, "MLX_SECRET_KEY")
    assert "Fernet.generate_key()" in line and "leave it unset" in line
    assert "benchkey" not in line  # a secret is never repeated
    assert not home.exists()


@pytest.mark.parametrize("args", [SERVE, MIGRATE], ids=["serve", "migrate"])
def test_a_database_that_does_not_answer_is_one_line_exit_1(
    tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "home"
    # port 1: nothing listens there, the connection is refused at once
    url = "postgresql+psycopg://someone:hunter2-password@127.0.0.1:1/mlx"
    proc = run(args, home, MLX_DATABASE_URL=url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = assert_one_line_naming(proc, "MLX_DATABASE_URL")
    assert "cannot be reached" in line and "127.0.0.1:1/mlx" in line, line
    assert "hunter2-password" not in line  # the password is never shown
    assert not home.exists()


@pytest.mark.parametrize("args", [SERVE, MIGRATE, TOKEN], ids=["serve", "migrate", "token"])
def test_a_home_that_cannot_be_made_is_one_line_exit_1(args: list[str]) -> None:
    home = Path("/proc/mlx-platform-home")  # /proc takes no new folder, whoever asks
    proc = run(args, home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = assert_one_line_naming(proc, "MLX_HOME")
    assert f"MLX_HOME {home} cannot be made" in line, line
    assert not home.exists()


def test_a_broken_key_in_the_home_stops_serve_before_the_admin_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("benchkeybenchkeybenchkeybenchkey12\n")
    proc = run(SERVE, home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = assert_one_line_naming(proc, "secret.key")
    assert "does not hold a Fernet key" in line and "MLX_SECRET_KEY" in line, line
    assert sorted(p.name for p in home.iterdir()) == ["secret.key"]  # no token, no database


EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "mlx-plugin-hello"


@pytest.mark.parametrize(
    "token", ["tökén-with-accents", "two\nlines-of-token"], ids=["non_ascii", "line_break"]
)
@pytest.mark.parametrize(
    "args",
    [["plugins", "list"], ["nodes", "--json"], ["plugins", "check", str(EXAMPLE_PLUGIN)]],
    ids=["plugins_list", "nodes", "plugins_check"],
)
def test_an_api_token_that_cannot_be_sent_is_one_line_exit_2(
    tmp_path: Path, token: str, args: list[str]
) -> None:
    # port 1: nothing listens; the token is refused before anything is sent
    env = clean_env(MLX_HOME=str(tmp_path / "home"), MLX_API_URL="http://127.0.0.1:1")
    proc = forked_mlx(args, {**env, "MLX_API_TOKEN": token})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    both = proc.stdout + proc.stderr
    assert not [mark for mark in TRACEBACK_MARKS if mark in both], both
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: the API token (MLX_API_TOKEN or --token) is not one"), line
    assert "accents" not in both and "lines-of-token" not in both  # never quoted
