"""`mlx` starts fast (issue 13: `mlx --help` < 300 ms): defining the command line imports
typer and nothing of the SDK, the wire models, the server or rich's tables."""

from __future__ import annotations

import json
import subprocess
import sys

# What only the commands that run need, imported when they run.
HEAVY = ("httpx", "pydantic", "rich.table", "rich.progress", "sqlalchemy", "fastapi")
HEAVY_OURS = (
    "mlx_platform.sdk",
    "mlx_platform.wire",
    "mlx_platform.server",
    "mlx_platform.cli.render",
)


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_command_line_loads_nothing_heavy() -> None:
    loaded = loaded_after("import mlx_platform.cli.main")
    assert "typer" in loaded
    assert not {m for m in loaded if m.startswith(HEAVY + HEAVY_OURS)}, sorted(
        m for m in loaded if m.startswith(HEAVY + HEAVY_OURS)
    )


def test_mlx_serve_runs_httptools_with_the_head_bound_and_h11_without_it() -> None:
    code = (
        "import sys, json\n"
        "{block}"
        "from mlx_platform.cli.main import _http_options\n"
        "options = _http_options(1024)\n"
        "print(json.dumps({{k: getattr(v, '__name__', v) for k, v in options.items()}}))\n"
    )

    def options(block: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", code.format(block=block)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(json.loads(out.splitlines()[-1]))

    assert options("") == {"http": "BoundedHttpToolsProtocol"}
    without = "sys.modules['httptools'] = None  # as if it were not installed\n"
    assert options(without) == {"http": "h11", "h11_max_incomplete_event_size": 1024}
