"""`mlx ... --help` as a user reads it (issue 14): no `<bool>` after flags, the environment
variable of every option that reads one named, and `mlx serve --help` naming MLX_HOST and
MLX_PORT."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import clean_env, forked_mlx


def command_paths() -> Iterator[tuple[list[str], Any]]:
    """Every command and group of `mlx`, as the words that name it (typer's own click)."""
    import typer.main

    from mlx_platform.cli.main import app

    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk([*path, name], sub)

    yield from walk([], typer.main.get_command(app))


COMMANDS = list(command_paths())


def help_text(path: list[str]) -> str:
    proc = forked_mlx([*path, "--help"], clean_env(COLUMNS="100"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "mlx" for p, _ in COMMANDS]
)
def test_help_shows_no_type_after_flags_and_names_env_vars(path: list[str], command: Any) -> None:
    text = help_text(path)
    assert "<bool>" not in text, text
    for param in command.params:
        if param.param_type_name != "option":
            continue
        if param.is_flag:  # a flag takes no value: nothing after it but its help
            line = next(line for line in text.splitlines() if param.opts[-1] in line)
            assert not re.search(re.escape(param.opts[-1]) + r" <", line), line
        for variable in [param.envvar] if isinstance(param.envvar, str) else param.envvar or []:
            assert variable in text, (param.opts, text)


def test_serve_help_names_its_environment_variables() -> None:
    text = help_text(["serve"])
    assert re.search(r"--host <str>.*\n?.*MLX_HOST", text), text
    assert re.search(r"--port <int>.*\n?.*MLX_PORT", text), text
    assert "MLX_HOME" in text
