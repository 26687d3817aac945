"""`from mlx_platform import MLXClient, AsyncMLXClient`: the two clients at the package's top,
imported only when asked for (plugin authors import `mlx_platform` for `Plugin`, and `mlx
--help` must not pay for the SDK)."""

from __future__ import annotations

import json
import subprocess
import sys


def run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.splitlines()[-1]))


def test_both_clients_are_exported_lazily() -> None:
    found = run(
        "import sys, json\n"
        "import mlx_platform\n"
        "before = 'mlx_platform.sdk' in sys.modules\n"
        "from mlx_platform import AsyncMLXClient, MLXClient\n"
        "from mlx_platform.sdk import AsyncMLXClient as A, MLXClient as M\n"
        "print(json.dumps({'before': before, 'same': AsyncMLXClient is A and MLXClient is M,\n"
        "    'all': sorted(set(['AsyncMLXClient', 'MLXClient']) & set(mlx_platform.__all__))}))\n"
    )
    assert found == {"before": False, "same": True, "all": ["AsyncMLXClient", "MLXClient"]}


def test_star_import_gives_both_clients() -> None:
    found = run(
        "import json\n"
        "from mlx_platform import *  # noqa: F403\n"
        "print(json.dumps({'names': [AsyncMLXClient.__name__, MLXClient.__name__]}))\n"
    )
    assert found == {"names": ["AsyncMLXClient", "MLXClient"]}
