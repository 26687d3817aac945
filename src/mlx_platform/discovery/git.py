"""Git repositories named in `MLX_PLUGIN_GIT_REPOS`: shallow clones kept under MLX_HOME.

Each repository (``URL`` or ``URL@ref``) is cloned once with ``git clone --depth 1`` into
``MLX_HOME/cache/git/<hash of URL and ref>``. Later scans ask the remote for the ref's commit
(``git ls-remote``, no objects transferred) and fetch (``git fetch --depth 1``) only when it
differs from the cached HEAD; a ref that is a full commit id already checked out needs no
network at all. The git CLI runs with a timeout and ``GIT_TERMINAL_PROMPT=0`` (a repository
that wants a password fails instead of waiting for one). A remote that cannot be reached
while a clone exists: the cached manifests are reported, with an error saying they may be
stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlx_platform.discovery.common import (
    NETWORK_TIMEOUT,
    Scan,
    manifest_folders,
)
from mlx_platform.plugins._manifest import MANIFEST_FILENAME, manifest_from_toml

log = logging.getLogger("mlx_platform.discovery")
_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class GitError(Exception):
    pass


@dataclass(frozen=True)
class RepoSpec:
    url: str
    ref: str | None

    @property
    def label(self) -> str:
        return f"{self.url}@{self.ref}" if self.ref else self.url

    @property
    def cache_name(self) -> str:
        return hashlib.sha256(self.label.encode()).hexdigest()[:24]


@dataclass
class RepoState:
    spec: RepoSpec
    path: Path | None = None
    sha: str | None = None
    action: str = "failed"  # cloned | fetched | unchanged | stale | failed
    fetches: int = 0  # network transfers of objects: clone or fetch


def parse_repos(setting: str) -> list[RepoSpec]:
    """``URL[@ref]`` items separated by whitespace or commas.

    The ref is what follows the last ``@`` of the path (as pip reads ``git+URL@ref``), so
    ``git@host:org/repo.git`` has no ref and ``https://host/repo.git@feature/x`` has one.
    """
    specs: list[RepoSpec] = []
    for raw in re.split(r"[\s,]+", setting.strip()):
        if not raw:
            continue
        if "://" in raw:
            scheme, _, rest = raw.partition("://")
            netloc, slash, path = rest.partition("/")
            head, tail = f"{scheme}://{netloc}{slash}", path
        elif re.match(r"^[^/]+@[^/:]+:", raw):  # scp-like: user@host:path
            user_host, _, path = raw.partition(":")
            head, tail = f"{user_host}:", path
        else:
            head, tail = "", raw
        ref = None
        if "@" in tail:
            tail, _, ref = tail.rpartition("@")
        specs.append(RepoSpec(head + tail, ref or None))
    return specs


def _git(*args: str, cwd: Path | None = None, timeout: float = NETWORK_TIMEOUT) -> str:
    """Run git without a terminal: in a session of its own (ssh cannot open /dev/tty to ask
    for a password), prompts off, the whole process group killed on timeout."""
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    posix = hasattr(os, "killpg")
    try:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=posix,
        )
    except FileNotFoundError:
        raise GitError("the git command is not installed") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                proc.kill()
        proc.communicate()
        raise GitError(f"git {args[0]} took longer than {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
        raise GitError(
            f"git {args[0]} failed: {detail or (lines[-1] if lines else proc.returncode)}"
        )
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One scan at a time per cached repository (threads here, processes via flock)."""
    with _locks_guard:
        lock = _locks.setdefault(str(path), threading.Lock())
    with lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as fh:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: the thread lock only
                pass
            yield


def remote_sha(spec: RepoSpec, timeout: float = NETWORK_TIMEOUT) -> str:
    """The commit the ref (or the remote's HEAD) names now: one ``git ls-remote``."""
    if spec.ref and _SHA.match(spec.ref):
        return spec.ref
    wanted = spec.ref or "HEAD"
    out = _git("ls-remote", "--", spec.url, wanted, timeout=timeout)
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if sha and name:
            refs[name.strip()] = sha.strip()
    if wanted == "HEAD":
        candidates = ["HEAD"]
    elif wanted.startswith("refs/"):
        candidates = [f"{wanted}^{{}}", wanted]
    else:
        candidates = [
            f"refs/heads/{wanted}",
            f"refs/tags/{wanted}^{{}}",
            f"refs/tags/{wanted}",
        ]
    for name in candidates:
        if name in refs:
            return refs[name]
    raise GitError(f"the remote has no ref '{wanted}'")


def _read_head(git_dir: Path) -> str | None:
    """HEAD's commit read from the files (no process): a detached sha, or a loose or packed
    branch ref. None when the layout is anything else (then git itself answers)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if _SHA.match(head):
            return head
        if not head.startswith("ref: refs/"):
            return None
        ref = head[len("ref: ") :]
        loose = git_dir / ref
        if loose.is_file():
            sha = loose.read_text().strip()
            return sha if _SHA.match(sha) else None
        packed = git_dir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.match(sha):
                    return sha
    except OSError:
        return None
    return None


def _head(path: Path) -> str | None:
    git_dir = path / ".git"
    if not git_dir.is_dir():
        return None
    fast = _read_head(git_dir)
    if fast is not None:
        return fast
    try:
        return _git("rev-parse", "HEAD", cwd=path, timeout=NETWORK_TIMEOUT).strip() or None
    except GitError:
        return None


def _clone(spec: RepoSpec, path: Path, timeout: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if spec.ref and _SHA.match(spec.ref):
            _git("init", "-q", str(tmp), timeout=timeout)
            _git("remote", "add", "origin", spec.url, cwd=tmp, timeout=timeout)
            _git("fetch", "-q", "--depth", "1", "origin", spec.ref, cwd=tmp, timeout=timeout)
            _git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=tmp, timeout=timeout)
        else:
            args = ["clone", "-q", "--depth", "1", "--no-tags"]
            if spec.ref:
                args += ["--branch", spec.ref]
            _git(*args, "--", spec.url, str(tmp), timeout=timeout)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sync_repo(spec: RepoSpec, cache_root: Path, timeout: float = NETWORK_TIMEOUT) -> RepoState:
    """Bring the cached clone to the ref's current commit, fetching only when it moved.

    Raises GitError when there is no usable clone; when a clone exists but the remote cannot
    be reached, answers the cached one with action ``stale`` and ``error`` set by the caller.
    """
    path = cache_root / spec.cache_name
    state = RepoState(spec, path)
    with _locked(path):
        head = _head(path)
        if head is None:
            _clone(spec, path, timeout)
            state.action, state.fetches, state.sha = "cloned", 1, _head(path)
            return state
        want = remote_sha(spec, timeout)  # the ref check; raises when the remote is gone
        if want == head:
            state.action, state.sha = "unchanged", head
            return state
        _git(
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "origin",
            spec.ref or "HEAD",
            cwd=path,
            timeout=timeout,
        )
        _git("reset", "-q", "--hard", "FETCH_HEAD", cwd=path, timeout=timeout)
        state.action, state.fetches, state.sha = "fetched", 1, _head(path)
        return state


def _read_manifests(state: RepoState, scan: Scan) -> None:
    assert state.path is not None
    short = (state.sha or "")[:12]
    for folder in manifest_folders(state.path):
        rel = os.path.relpath(os.path.join(folder, MANIFEST_FILENAME), state.path)
        location = f"{state.spec.label} ({short}) {rel}"
        try:
            text = Path(folder, MANIFEST_FILENAME).read_text(encoding="utf-8")
            manifest = manifest_from_toml(text, rel)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            scan.error("git", location, str(exc))
            continue
        manifest.setdefault("repository_url", state.spec.url)
        scan.add("git", manifest, location, label=rel)


def scan_repo(spec: RepoSpec, cache_root: Path, timeout: float = NETWORK_TIMEOUT) -> Scan:
    scan = Scan()
    try:
        state = sync_repo(spec, cache_root, timeout)
    except GitError as exc:
        path = cache_root / spec.cache_name
        head = _head(path)
        if head is None:
            log.warning("git %s: %s", spec.label, exc)
            scan.error("git", spec.label, str(exc))
            return scan
        state = RepoState(spec, path, head, "stale")
        scan.error("git", spec.label, f"{exc}; showing the cached commit {head[:12]}")
    log.info(
        "git %s: %s at %s (%d fetch%s)",
        spec.label,
        state.action,
        (state.sha or "?")[:12],
        state.fetches,
        "" if state.fetches == 1 else "es",
    )
    if not (state.path and (state.path / ".git").exists()):
        scan.error("git", spec.label, "the clone has no work tree")
        return scan
    _read_manifests(state, scan)
    if not any(f.location.startswith(spec.label) for f in scan.found) and not scan.errors:
        scan.error("git", spec.label, f"no {MANIFEST_FILENAME} at the root or in a folder")
    return scan
