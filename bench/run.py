"""Run every benchmark: one line per figure, then `bench: N of M targets met`.

python bench/run.py            (what `make bench` runs)
python bench/run.py runtime    (only the modules whose name contains "runtime")
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    import psutil

    wanted = sys.argv[1:]
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if wanted:
        modules = [m for m in modules if any(w in m for w in wanted)]
    print(
        f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total // 2**30} GiB; medians"
    )
    figures = []
    for name in modules:
        module = importlib.import_module(name)
        for figure in module.run():
            print(figure.line(), flush=True)
            figures.append(figure)
    met = sum(1 for f in figures if f.met)
    print(f"bench: {met} of {len(figures)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
