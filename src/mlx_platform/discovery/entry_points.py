"""Installed entry points of the group `mlx_platform.plugins`, and the manifests of their targets.

Finding them is cheap and runs in the service: `importlib.metadata` reads each distribution's
`entry_points.txt`; nothing is imported. A target's manifest (a `Plugin` subclass's class
attributes, or what a manifest function returns) can only be read by importing it, and plugin
code never runs in the service: the targets whose manifest is not cached yet are imported in
ONE throwaway process per scan (``python -m mlx_platform.discovery.entry_points REQUEST.json``),
which prints one answer line per entry point as it goes.

The manifests read are kept in ``MLX_HOME/cache/entry_points.json``, keyed by distribution,
version, entry point (name and value) and the dist-info folder's modification time, so an
unchanged distribution is never imported again; a reinstalled or upgraded one is read afresh.
Failures are not cached: a plugin that failed to import may work once a dependency is there.

A target that hangs or ends the throwaway process (``os._exit`` on import) costs only itself:
the answers printed before it are kept, it is reported, and a new process reads the rest.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import Distribution, entry_points
from pathlib import Path
from typing import Any

from mlx_platform.runtime.throwaway import MARK, answer

GROUP = "mlx_platform.plugins"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class InstalledEntryPoint:
    name: str
    value: str
    distribution: str
    version: str
    key: str
    dist: Distribution | None = field(default=None, compare=False, repr=False)


@dataclass
class EntryPointManifest:
    entry_point: InstalledEntryPoint
    distribution: str
    manifest: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class EntryPointScan:
    items: list[EntryPointManifest]
    cached: int = 0
    read: int = 0
    throwaway_runs: int = 0


def _identity(dist: Distribution) -> tuple[str, str, str]:
    """(name, version, stamp) of a distribution, from its dist-info folder name when it can.

    A ``name-version.dist-info`` folder name is the wheel spec's (PEP 427), so reading METADATA
    (an e-mail header parse per distribution) is needed only for other layouts (egg-info).
    """
    path = getattr(dist, "_path", None)
    stamp = ""
    if isinstance(path, Path):
        try:
            stamp = str(os.stat(path).st_mtime_ns)
        except OSError:
            stamp = ""
        folder = path.name
        if folder.endswith(".dist-info"):
            name, sep, version = folder[: -len(".dist-info")].partition("-")
            if sep and version:
                return name, version, stamp
    meta = dist.metadata
    return str(meta["Name"] or "?"), str(dist.version or "?"), stamp


def installed_entry_points() -> list[InstalledEntryPoint]:
    """Every entry point of the group, as `importlib.metadata` sees the service's path."""
    out: list[InstalledEntryPoint] = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        if dist is None:
            name, version, stamp = "?", "?", ""
        else:
            name, version, stamp = _identity(dist)
        key = "\x1f".join((name, version, ep.name, ep.value, stamp))
        out.append(InstalledEntryPoint(ep.name, ep.value, name, version, key, dist))
    return out


# ---------------------------------------------------------------------------- the cache


_memo: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    memo = _memo.get(str(path))
    if memo is not None and memo[0] == stamp:
        return memo[1]
    from mlx_platform import __version__

    try:
        data = json.loads(path.read_text())
        ok = data.get("format") == CACHE_FORMAT and data.get("mlx_platform") == __version__
        entries: dict[str, Any] = data["entries"] if ok else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = {}
    _memo[str(path)] = (stamp, entries)
    return entries


def _save_cache(path: Path, entries: dict[str, Any]) -> None:
    from mlx_platform import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CACHE_FORMAT, "mlx_platform": __version__, "entries": entries}
    fd, tmp = tempfile.mkstemp(prefix=".entry_points.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _memo.pop(str(path), None)


def scan_entry_points(cache_path: Path | None, timeout: float) -> EntryPointScan:
    """Installed entry points with their manifests: cached ones at once, the rest read in
    one throwaway process."""
    eps = installed_entry_points()
    entries = _load_cache(cache_path) if cache_path is not None else {}
    scan = EntryPointScan(items=[])
    missing: list[tuple[int, InstalledEntryPoint]] = []
    for i, ep in enumerate(eps):
        hit = entries.get(ep.key)
        if hit is not None:
            scan.items.append(EntryPointManifest(ep, hit["distribution"], manifest=hit["manifest"]))
            scan.cached += 1
        else:
            scan.items.append(EntryPointManifest(ep, ep.distribution))
            missing.append((i, ep))
    if not missing:
        return scan

    for i, ep in missing:
        if ep.dist is not None:
            try:
                scan.items[i].distribution = str(ep.dist.metadata["Name"] or ep.distribution)
            except Exception:  # noqa: BLE001 - unreadable METADATA: keep the folder's name
                pass
    answers, runs = read_manifests([ep.value for _, ep in missing], timeout)
    scan.throwaway_runs = runs
    scan.read = len(missing)
    fresh = {k: v for k, v in entries.items() if k in {ep.key for ep in eps}}
    for (i, ep), got in zip(missing, answers, strict=True):
        item = scan.items[i]
        if "manifest" in got:
            item.manifest = got["manifest"]
            fresh[ep.key] = {"distribution": item.distribution, "manifest": got["manifest"]}
        else:
            item.error = str(got.get("error") or "unreadable")
    if cache_path is not None and fresh != entries:
        try:
            _save_cache(cache_path, fresh)
        except OSError:
            pass  # a cache that cannot be written only costs the next scan an import
    return scan


# ---------------------------------------------------------------- the throwaway process


def read_manifests(values: list[str], timeout: float) -> tuple[list[dict[str, Any]], int]:
    """Import each entry point value in a throwaway process; one answer dict per value
    (``{"manifest": ...}`` or ``{"error": ...}``) and the number of processes started."""
    results: list[dict[str, Any] | None] = [None] * len(values)
    runs = 0
    start = 0
    with tempfile.TemporaryDirectory(prefix="mlx-manifests-") as tmp:
        while start < len(values):
            request = Path(tmp) / f"request-{runs}.json"
            request.write_text(json.dumps({"sys_path": sys.path, "values": values[start:]}))
            runs += 1
            got, ended = _run(request, timeout)
            for offset, payload in got.items():
                if 0 <= offset < len(values) - start:
                    results[start + offset] = payload
            answered = start
            while answered < len(values) and results[answered] is not None:
                answered += 1
            if answered >= len(values):
                break
            # The first entry point without an answer stopped the process: report it, and
            # read the ones after it in a new process.
            results[answered] = {"error": ended}
            start = answered + 1
    return [r if r is not None else {"error": "not read"} for r in results], runs


def _run(request: Path, timeout: float) -> tuple[dict[int, dict[str, Any]], str]:
    """Run the reader; its answers so far, and what ended it if it did not finish.

    Its output goes to a file, not a pipe, and it runs in a session of its own that is killed
    whole on timeout: a plugin that starts a child holding the output open cannot make us wait.
    """
    cmd = [sys.executable, "-m", "mlx_platform.discovery.entry_points", str(request)]
    out_path = request.with_suffix(".out")
    with open(out_path, "wb") as out_file:
        proc = subprocess.Popen(
            cmd,
            stdout=out_file,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=hasattr(os, "killpg"),
        )
        try:
            code = proc.wait(timeout=timeout)
            ended = f"importing it ended the process (exit code {code})"
        except subprocess.TimeoutExpired:
            ended = f"importing it took longer than {timeout:g} s"
            try:
                if hasattr(os, "killpg"):
                    os.killpg(proc.pid, signal.SIGKILL)
                else:  # pragma: no cover - Windows
                    proc.kill()
            except OSError:
                pass
            proc.wait()
    out = out_path.read_text(errors="replace")
    got: dict[int, dict[str, Any]] = {}
    for line in out.splitlines():
        if not line.startswith(MARK):
            continue
        try:
            payload = json.loads(line[len(MARK) :])
        except ValueError:
            continue
        if isinstance(payload, dict) and isinstance(payload.get("i"), int):
            index = payload.pop("i")
            got[index] = payload
    return got, ended


def _target(value: str) -> tuple[str, str]:
    """(module, attribute path) of an entry point value; extras (`[x]`) are dropped."""
    value = value.split("[", 1)[0].strip()
    if ":" in value:
        module, _, attr = value.partition(":")
    else:
        module, _, attr = value.rpartition(".")
    return module.strip(), attr.strip()


def read_one(value: str) -> dict[str, Any]:
    """The manifest of one entry point target (runs in the throwaway process)."""
    from mlx_platform.plugins import Plugin, manifest_from_class

    module_name, attr = _target(value)
    if not module_name or not attr:
        return {"error": f"'{value}' does not name a Plugin subclass or a manifest function"}
    try:
        obj: Any = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - plugin code may raise anything on import
        return {"error": f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"}
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return {"error": f"module '{module_name}' has no attribute '{attr}'"}
    class_path = f"{module_name}.{attr}"
    if inspect.isclass(obj):
        if not issubclass(obj, Plugin):
            return {"error": f"'{class_path}' is not a subclass of mlx_platform.plugins.Plugin"}
        return {"manifest": manifest_from_class(obj, class_path)}
    if not callable(obj):
        return {"error": f"'{class_path}' is neither a Plugin subclass nor a manifest function"}
    try:
        result = obj()
    except BaseException as exc:  # noqa: BLE001
        return {"error": f"manifest function '{class_path}' failed: {type(exc).__name__}: {exc}"}
    if inspect.isclass(result) and issubclass(result, Plugin):
        return {"manifest": manifest_from_class(result)}
    if isinstance(result, dict):
        if not result.get("class_path"):
            return {"error": f"manifest function '{class_path}' returned no class_path"}
        return {"manifest": dict(result)}
    return {
        "error": f"manifest function '{class_path}' returned {type(result).__name__}, "
        "not a manifest dict or a Plugin subclass"
    }


def _main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    sys.path[:] = [p for p in request["sys_path"] if isinstance(p, str)]
    importlib.invalidate_caches()
    for i, value in enumerate(request["values"]):
        payload = read_one(value)
        payload["i"] = i
        try:
            answer(payload)
        except (TypeError, ValueError) as exc:
            answer({"i": i, "error": f"the manifest cannot be serialised: {exc}"})
    answer({"done": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
