"""Discovery costs: the installed entry-point scan beside a bare `importlib.metadata` query over
the same 500 distributions, in the same run; the rescan of an unchanged git repository."""

from __future__ import annotations

import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from _common import Figure

from mlx_platform.discovery.entry_points import GROUP, scan_entry_points
from mlx_platform.discovery.git import RepoSpec, remote_sha, scan_repo, sync_repo

DISTRIBUTIONS = 500
ROUNDS = 31


def make_site(root: Path, count: int = DISTRIBUTIONS) -> Path:
    """`count` dist-info folders (METADATA, entry_points.txt) and the module their entry
    points name: what `pip install` of `count` one-plugin distributions leaves behind."""
    site = root / "site"
    site.mkdir()
    classes = ["from mlx_platform.plugins import Plugin\n"]
    for i in range(count):
        classes.append(
            f"\nclass Bench{i}(Plugin):\n    name = 'bench_{i}'\n    type = 'data_source'\n"
            f"    version = '1.0.{i}'\n"
        )
        info = site / f"mlxbench_dist_{i}-1.0.{i}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: mlxbench-dist-{i}\nVersion: 1.0.{i}\n"
            f"Summary: benchmark distribution {i}\n"
        )
        (info / "entry_points.txt").write_text(
            f"[console_scripts]\nmlxbench-{i} = mlxbench_plugins:main\n\n"
            f"[{GROUP}]\nbench_{i} = mlxbench_plugins:Bench{i}\n"
        )
    (site / "mlxbench_plugins.py").write_text("".join(classes))
    return site


def side_by_side(a: Callable[[], object], b: Callable[[], object]) -> tuple[float, float]:
    """Medians (ms) of a and b, alternated round by round so drift hits both alike."""
    ta, tb = [], []
    for _ in range(3):
        a(), b()
    for i in range(ROUNDS):
        for func, out in ((a, ta), (b, tb)) if i % 2 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            func()
            out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ta), statistics.median(tb)


def entry_point_figures(tmp: Path) -> list[Figure]:
    site = make_site(tmp)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    cache = tmp / "home" / "cache" / "entry_points.json"
    try:
        t0 = time.perf_counter()
        cold = scan_entry_points(cache, timeout=120)
        cold_ms = (time.perf_counter() - t0) * 1000
        bench_items = [i for i in cold.items if i.entry_point.name.startswith("bench_")]
        assert len(bench_items) == DISTRIBUTIONS, len(bench_items)
        assert all(i.manifest for i in bench_items), [i.error for i in bench_items][:3]
        warm = scan_entry_points(cache, timeout=120)
        assert warm.read == 0 and warm.throwaway_runs == 0, (warm.read, warm.throwaway_runs)

        ours, bare = side_by_side(
            lambda: scan_entry_points(cache, timeout=120),
            lambda: list(entry_points(group=GROUP)),
        )
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
    return [
        Figure(
            f"discovery_entry_point_scan_{DISTRIBUTIONS}_dists",
            ours,
            "ms",
            1.5 * bare,
            bare,
            "(bare entry_points(group=...))",
        ),
        Figure("discovery_entry_point_scan_vs_bare", ours / bare, "x", 1.5, 1.0, "(bare = 1)"),
        Figure(
            "discovery_cold_scan_throwaway_processes",
            cold.throwaway_runs,
            "processes",
            1,
            None,
            f"({DISTRIBUTIONS} targets read in {cold_ms:.0f} ms)",
        ),
    ]


def _git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def git_figures(tmp: Path) -> list[Figure]:
    repo = tmp / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    for i in range(20):
        folder = repo / f"plugin_{i}"
        folder.mkdir()
        (folder / "mlx-plugin.toml").write_text(
            f'name = "git_bench_{i}"\ntype = "data_source"\nversion = "1.0.0"\n'
            'class_path = "pkg.Plugin"\n'
        )
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "plugins", cwd=repo)
    spec = RepoSpec(f"file://{repo}", None)
    cache = tmp / "home" / "cache" / "git"
    first = sync_repo(spec, cache)
    assert first.action == "cloned", first
    fetch_head = cache / spec.cache_name / ".git" / "FETCH_HEAD"
    before = fetch_head.stat().st_mtime_ns if fetch_head.exists() else None
    fetches = sum(sync_repo(spec, cache).fetches for _ in range(5))
    after = fetch_head.stat().st_mtime_ns if fetch_head.exists() else None
    assert before == after

    rescan, ls_remote = side_by_side(lambda: scan_repo(spec, cache), lambda: remote_sha(spec))
    return [
        Figure(
            "discovery_git_unchanged_rescan_fetches",
            fetches,
            "fetches",
            0,
            None,
            "(5 rescans of an unchanged repository)",
        ),
        Figure(
            "discovery_git_unchanged_rescan",
            rescan,
            "ms",
            2 * ls_remote,
            ls_remote,
            "(bare git ls-remote)",
        ),
    ]


def run() -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="mlx-bench-discovery-") as name:
        tmp = Path(name)
        figures += entry_point_figures(tmp)
        if shutil.which("git"):
            figures += git_figures(tmp)
    return figures


if __name__ == "__main__":
    for f in run():
        print(f.line())
