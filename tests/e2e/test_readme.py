"""The README's walk-through: every command runs, and answers as the README shows."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, clean_env, free_port


@pytest.mark.process  # the walk-through starts `mlx serve` itself
def test_readme_walkthrough_answers_as_shown() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "walkthrough.py"),
            "--check",
            "--port",
            str(free_port()),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_shows_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make serve" in text and "make test" in text
