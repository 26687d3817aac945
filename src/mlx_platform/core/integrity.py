"""The code a plugin was registered with: the sha256 of its files, pinned at registration and
compared before it runs (as Vault pins plugin binaries).

The registration's throwaway probe says where the class's code lives (runtime/origin.py);
this module hashes those files in the service process by reading them, never importing them:

- an installed distribution: every file its RECORD lists with a hash (a file RECORD lists
  without one, a ``.pyc`` compiled at install or RECORD itself, is skipped);
- a package folder or a single module (a plugin folder, an editable install, anything else
  on the path): every file under the folder (or the file), ``__pycache__`` and ``*.pyc``
  skipped.

The stored digest is ``{"algorithm": "sha256", "source", "root", "files": {path: hex}}`` with
paths relative to `root`, plus what is needed to find the files again (the distribution's
``.dist-info`` folder, or the top-level entries under `root`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALGORITHM = "sha256"
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:  # gone, unreadable, a folder: not the file that was pinned
        return None


def _record_hex(hash_value: str) -> str | None:
    """RECORD's ``sha256=<urlsafe base64, no padding>`` as hex."""
    try:
        raw = base64.urlsafe_b64decode(hash_value + "=" * (-len(hash_value) % 4))
    except ValueError:
        return None
    return raw.hex()


def _distribution_files(origin: dict[str, Any]) -> dict[str, tuple[Path, str | None]] | None:
    """{relative path: (absolute path, RECORD's sha256 in hex or None)} of every file the
    distribution's RECORD lists with a hash; None when its metadata folder is gone."""
    meta = Path(str(origin.get("metadata_path") or ""))
    if not meta.is_dir():
        return None
    dist = md.PathDistribution(meta)
    out: dict[str, tuple[Path, str | None]] = {}
    for f in dist.files or []:
        if f.hash is None:
            continue
        expected = _record_hex(f.hash.value) if f.hash.mode == ALGORITHM else None
        out[f.as_posix()] = (Path(str(dist.locate_file(f))), expected)
    return out


def _tree_files(origin: dict[str, Any]) -> dict[str, Path]:
    """{relative path: absolute path} of every file of the top-level entries under root."""
    root = Path(str(origin.get("root") or ""))
    out: dict[str, Path] = {}
    for entry in origin.get("entries") or []:
        top = root / entry
        if top.is_file():
            out[entry] = top
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
            for name in files:
                if name.endswith(_SKIPPED_SUFFIXES):
                    continue
                path = Path(folder) / name
                out[path.relative_to(root).as_posix()] = path
    return out


def pin(origin: dict[str, Any] | None) -> dict[str, Any]:
    """The digest of the code at `origin` (the probe's answer), to store at registration.
    {} when there is nothing to pin (no origin: the class did not load)."""
    if not origin:
        return {}
    source = origin.get("source")
    digest: dict[str, Any] = {"algorithm": ALGORITHM, "source": source, "root": origin["root"]}
    if source == "service":
        # The service's own code (the example plugins) changes with the service's upgrades,
        # which the operator makes; pinning it would refuse them after every upgrade.
        digest["files"] = {}
        return digest
    files: dict[str, str] = {}
    if source == "distribution":
        listed = _distribution_files(origin) or {}
        differs: list[str] = []
        for rel, (path, expected) in sorted(listed.items()):
            actual = _sha256(path)
            if actual is None:
                continue
            files[rel] = actual
            if expected is not None and expected != actual:
                differs.append(rel)
        digest.update(
            distribution=origin.get("distribution"),
            distribution_version=origin.get("distribution_version"),
            metadata_path=origin.get("metadata_path"),
        )
        if differs:
            # pinned as they are on disk (that is the code that runs); said, not refused
            digest["modified_since_install"] = differs
    else:
        for rel, path in sorted(_tree_files(origin).items()):
            actual = _sha256(path)
            if actual is not None:
                files[rel] = actual
        digest["entries"] = list(origin.get("entries") or [])
        if origin.get("distribution"):
            digest["distribution"] = origin["distribution"]
    digest["files"] = files
    return digest


def same_code(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two digests pin the same files with the same contents at the same place."""
    a, b = a or {}, b or {}
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in ("source", "root", "files"))


@dataclass
class Changes:
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def describe(self, limit: int = 3) -> str:
        parts: list[str] = []
        for word, names in (("changed", self.changed), ("added", self.added)):
            parts += [f"{n} {word}" for n in names]
        parts += [f"{n} removed" for n in self.removed]
        shown = ", ".join(parts[:limit])
        return shown + (f" (and {len(parts) - limit} more)" if len(parts) > limit else "")

    def as_details(self, limit: int = 50) -> dict[str, Any]:
        return {
            "changed_files": self.changed[:limit],
            "added_files": self.added[:limit],
            "removed_files": self.removed[:limit],
            "counts": {
                "changed": len(self.changed),
                "added": len(self.added),
                "removed": len(self.removed),
            },
        }


def changes(digest: dict[str, Any] | None) -> Changes:
    """What differs between the pinned files and the files on disk now. Nothing for a plugin
    with no digest (registered before pinning existed) or the service's own code."""
    result = Changes()
    if not digest or digest.get("source") in (None, "service"):
        return result
    pinned: dict[str, str] = digest.get("files") or {}
    now: dict[str, Path]
    root = Path(str(digest.get("root") or ""))
    if digest.get("source") == "distribution":
        # the pinned files where they were, and whatever RECORD lists now (an upgrade to
        # another version has another .dist-info folder: the pinned one reads as removed)
        now = {rel: root / rel for rel in pinned}
        listed = _distribution_files(digest) or {}
        now.update({rel: path for rel, (path, _) in listed.items()})
    else:
        now = _tree_files(digest)
    for rel in sorted(pinned):
        path = now.get(rel)
        actual = _sha256(path) if path is not None else None
        if actual is None:
            result.removed.append(rel)
        elif actual != pinned[rel]:
            result.changed.append(rel)
    result.added = sorted(rel for rel in now if rel not in pinned and _sha256(now[rel]))
    return result


def summary(digest: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the plugin detail shows: not every file."""
    if not digest:
        return None
    out: dict[str, Any] = {
        "algorithm": digest.get("algorithm", ALGORITHM),
        "source": digest.get("source"),
        "root": digest.get("root"),
        "files": len(digest.get("files") or {}),
    }
    for key in ("distribution", "distribution_version"):
        if digest.get(key):
            out[key] = digest[key]
    if digest.get("modified_since_install"):
        out["modified_since_install"] = len(digest["modified_since_install"])
    return out
