"""Start-up of the `mlx` command line: `mlx --help` beside a bare `python -c "import typer"`,
each a new process, alternated round by round in the same run (issue 13: at most 300 ms)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import Figure

ROUNDS = 15
WARMUPS = 2
TARGET_MS = 300.0


def mlx_command() -> list[str]:
    """The `mlx` script of this interpreter's environment (what people run), else the module."""
    script = Path(sys.executable).parent / "mlx"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlx_platform.cli.main"]


def wall_ms(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t0) * 1000


def run() -> list[Figure]:
    help_command = [*mlx_command(), "--help"]
    typer_command = [sys.executable, "-c", "import typer"]
    shown = subprocess.run(help_command, capture_output=True, text=True, check=True)
    assert "Usage: mlx" in shown.stdout and "plugins" in shown.stdout, shown.stdout[:500]
    for _ in range(WARMUPS):
        wall_ms(help_command), wall_ms(typer_command)
    ours, bare = [], []
    for i in range(ROUNDS):
        pairs = ((help_command, ours), (typer_command, bare))
        for command, out in pairs if i % 2 else reversed(pairs):
            out.append(wall_ms(command))
    return [
        Figure(
            "cli_help_startup",
            statistics.median(ours),
            "ms",
            TARGET_MS,
            statistics.median(bare),
            "(python -c 'import typer')",
        )
    ]


if __name__ == "__main__":
    for f in run():
        print(f.line())
