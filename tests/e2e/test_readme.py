"""The README's walk-through: every command runs, and answers as the README shows."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, clean_env, free_port


def other_installed_plugins() -> list[str]:
    """Plugin packages installed beside the service (entry points of other distributions)."""
    from importlib.metadata import entry_points

    return sorted(
        {
            ep.dist.name
            for ep in entry_points(group="mlx_platform.plugins")
            if ep.dist is not None and ep.dist.name != "mlx-platform"
        }
    )


@pytest.mark.process  # the walk-through starts `mlx serve` itself
def test_readme_walkthrough_answers_as_shown() -> None:
    others = other_installed_plugins()
    if others:
        # the README's discover answer is that of a venv holding the service alone
        pytest.skip(f"plugin packages installed beside the service: {', '.join(others)}")
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
