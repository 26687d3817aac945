"""A package index (`MLX_PLUGIN_INDEX_URL`): the projects named ``mlx-plugin-*`` it offers.

The index is read with the standard simple repository API: JSON (PEP 691) when the server
offers it, else HTML (PEP 503), chosen by the ``Accept`` header and the answer's content type.
For each ``mlx-plugin-*`` project: the newest version (by `packaging.version`; pre-releases
only when there is nothing else; yanked files ignored), and one of its wheels (one this
interpreter can install when there is one). Its metadata:

1. the wheel's core metadata alone when the index serves it apart (PEP 658/714
   ``core-metadata``, the wheel's URL + ``.metadata``) and its ``Keywords`` name the plugin type
   (``mlx-plugin-type=data_source``);
2. otherwise the wheel itself (at most 64 MiB, hash checked): its ``*.dist-info/METADATA``,
   its ``entry_points.txt`` and any ``mlx-plugin.toml`` it carries (at the top, in a package
   folder or in the dist-info folder).

The manifest: each embedded ``mlx-plugin.toml`` (version and description default to the
wheel's); else one plugin per entry point of the group ``mlx_platform.plugins`` (the entry
point's name and target, the type from the keyword); else one plugin named after the project
(``mlx-plugin-snowflake`` -> ``snowflake``). What was read from a wheel is cached under
``MLX_HOME/cache/index`` by the file's sha256 (files on an index never change), so later scans
read only the index pages. Nothing is installed, built or imported; sdists are not read (their
metadata may need their build code to run). Such plugins are reported ``installed: false`` and
are never auto-registered.
"""

from __future__ import annotations

import email.message
import email.parser
import hashlib
import io
import json
import logging
import os
import platform
import tempfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urldefrag, urljoin

import httpx
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from mlx_platform.discovery.common import NETWORK_TIMEOUT, Found, Scan
from mlx_platform.plugins._manifest import MANIFEST_FILENAME, manifest_from_toml

log = logging.getLogger("mlx_platform.discovery")

PROJECT_PREFIX = "mlx-plugin-"
TYPE_KEYWORD = "mlx-plugin-type="
GROUP = "mlx_platform.plugins"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
MAX_WHEEL_BYTES = 64 * 2**20
CACHE_FORMAT = 1


class PackageIndexError(Exception):
    """The index or one of its wheels could not be read (HTTP, size, hash, zip, metadata)."""


@dataclass
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    requires_python: str | None
    core_metadata: bool | str  # False, True, or the metadata file's sha256
    yanked: bool


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open, "".join(self._text).strip()))
            self._open = None


def _is_json(resp: httpx.Response) -> bool:
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype in (JSON_TYPE, "application/json")


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        resp = client.get(url, headers={"Accept": ACCEPT})
    except httpx.HTTPError as exc:
        raise PackageIndexError(f"{type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise PackageIndexError(f"HTTP {resp.status_code}")
    return resp


def list_projects(client: httpx.Client, root: str) -> list[tuple[str, str]]:
    """(name, project page URL) of every project on the index."""
    resp = _get(client, root)
    base = str(resp.url)
    if _is_json(resp):
        data = resp.json()
        return [
            (p["name"], urljoin(base, f"{canonicalize_name(p['name'])}/"))
            for p in data.get("projects", [])
            if isinstance(p, dict) and p.get("name")
        ]
    parser = _Links()
    parser.feed(resp.text)
    return [(text, urljoin(base, a.get("href") or "")) for a, text in parser.links if text]


def _hash_of(value: Any) -> str | None:
    if isinstance(value, dict):
        sha = value.get("sha256")
        return str(sha) if sha else None
    if isinstance(value, str) and value.startswith("sha256="):
        return value[len("sha256=") :]
    return None


def _metadata_flag(value: Any) -> bool | str:
    if value in (None, False, "false"):
        return False
    return _hash_of(value) or True


def project_files(client: httpx.Client, url: str) -> list[IndexFile]:
    resp = _get(client, url)
    base = str(resp.url)
    files: list[IndexFile] = []
    if _is_json(resp):
        for f in resp.json().get("files", []):
            if not isinstance(f, dict) or not f.get("filename") or not f.get("url"):
                continue
            meta = f.get("core-metadata", f.get("dist-info-metadata", False))
            files.append(
                IndexFile(
                    filename=f["filename"],
                    url=urldefrag(urljoin(base, f["url"]))[0],
                    sha256=_hash_of(f.get("hashes") or {}),
                    requires_python=f.get("requires-python") or None,
                    core_metadata=_metadata_flag(meta),
                    yanked=bool(f.get("yanked")),
                )
            )
        return files
    parser = _Links()
    parser.feed(resp.text)
    for attrs, text in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        full, fragment = urldefrag(urljoin(base, href))
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        files.append(
            IndexFile(
                filename=text or PurePosixPath(full).name,
                url=full,
                sha256=_hash_of(fragment),
                requires_python=attrs.get("data-requires-python") or None,
                core_metadata=False if meta is None else (_hash_of(meta) or True),
                yanked="data-yanked" in attrs,
            )
        )
    return files


def _version_of(filename: str) -> tuple[Version, bool] | None:
    """(version, is_wheel) of a distribution file name; None for other files."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1], True
        return parse_sdist_filename(filename)[1], False
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _fetch_bytes(client: httpx.Client, url: str, sha256: str | None, limit: int) -> bytes:
    buf = io.BytesIO()
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise PackageIndexError(f"{url}: HTTP {resp.status_code}")
            for chunk in resp.iter_bytes():
                buf.write(chunk)
                if buf.tell() > limit:
                    raise PackageIndexError(f"{url}: larger than {limit // 2**20} MiB")
    except httpx.HTTPError as exc:
        raise PackageIndexError(f"{url}: {type(exc).__name__}: {exc}") from exc
    data = buf.getvalue()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise PackageIndexError(f"{url}: sha256 does not match the index's")
    return data


def _read_wheel(data: bytes, filename: str) -> dict[str, Any]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise PackageIndexError(f"{filename}: not a wheel (zip): {exc}") from exc
    with zf:
        names = zf.namelist()
        meta_names = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if not meta_names:
            raise PackageIndexError(f"{filename}: no *.dist-info/METADATA")
        dist_info = meta_names[0].split("/")[0]

        def text(name: str) -> str:
            with zf.open(name) as fh:
                return fh.read(4 * 2**20).decode("utf-8", errors="replace")

        try:
            info: dict[str, Any] = {"metadata": text(meta_names[0])}
            ep_name = f"{dist_info}/entry_points.txt"
            info["entry_points"] = text(ep_name) if ep_name in names else None
            info["manifests"] = [
                [n, text(n)]
                for n in sorted(names)
                if PurePosixPath(n).name == MANIFEST_FILENAME and n.count("/") <= 1
            ]
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
            raise PackageIndexError(f"{filename}: unreadable member: {exc}") from exc
    return info


def _type_keyword(metadata: email.message.Message) -> str | None:
    for raw in metadata.get_all("Keywords") or []:
        for word in str(raw).replace(",", " ").split():
            if word.lower().startswith(TYPE_KEYWORD):
                return word[len(TYPE_KEYWORD) :] or None
    return None


class _WheelCache:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _path(self, f: IndexFile) -> Path | None:
        if self.folder is None:
            return None
        key = f.sha256 or hashlib.sha256(f.url.encode()).hexdigest()
        return self.folder / f"{key}.json"

    def get(self, f: IndexFile) -> dict[str, Any] | None:
        path = self._path(f)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("format") != CACHE_FORMAT or data.get("url") != f.url:
            return None
        info = data.get("info")
        return info if isinstance(info, dict) else None

    def put(self, f: IndexFile, info: dict[str, Any]) -> None:
        path = self._path(f)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".wheel.", dir=path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": CACHE_FORMAT, "url": f.url, "info": info}, fh)
            os.replace(tmp, path)
        except OSError:
            pass


def wheel_info(client: httpx.Client, f: IndexFile, cache: _WheelCache) -> dict[str, Any]:
    """METADATA (and, when the wheel was read, entry points and manifests) of one wheel."""
    cached = cache.get(f)
    if cached is not None:
        return cached
    info: dict[str, Any] | None = None
    if f.core_metadata:
        expected = f.core_metadata if isinstance(f.core_metadata, str) else None
        try:
            raw = _fetch_bytes(client, f.url + ".metadata", expected, 4 * 2**20)
            text = raw.decode("utf-8", errors="replace")
            if _type_keyword(email.parser.HeaderParser().parsestr(text)):
                info = {
                    "metadata": text,
                    "entry_points": None,
                    "manifests": [],
                    "read": "core-metadata",
                }
        except PackageIndexError as exc:
            log.info(
                "index: core metadata of %s not usable (%s); reading the wheel", f.filename, exc
            )
    if info is None:
        info = _read_wheel(_fetch_bytes(client, f.url, f.sha256, MAX_WHEEL_BYTES), f.filename)
        info["read"] = "wheel"
    cache.put(f, info)
    return info


def _entry_points(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    out: list[tuple[str, str]] = []
    group = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group == GROUP and "=" in line:
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def _python_reason(spec: str | None) -> str | None:
    if not spec:
        return None
    here = platform.python_version()
    try:
        if not SpecifierSet(spec).contains(here, prereleases=True):
            return f"needs Python {spec}, this is {here}"
    except InvalidSpecifier:
        return f"Requires-Python '{spec}' is not a version specifier"
    return None


def _project(client: httpx.Client, name: str, url: str, cache: _WheelCache) -> Scan:
    scan = Scan()
    try:
        files = project_files(client, url)
    except (PackageIndexError, ValueError) as exc:
        scan.error("pypi", url, f"project '{name}': {exc}")
        return scan
    by_version: dict[Version, list[IndexFile]] = {}
    wheels: dict[Version, list[IndexFile]] = {}
    for f in files:
        parsed = None if f.yanked else _version_of(f.filename)
        if parsed is None:
            continue
        ver, is_wheel = parsed
        by_version.setdefault(ver, []).append(f)
        if is_wheel:
            wheels.setdefault(ver, []).append(f)
    if not by_version:
        scan.error("pypi", url, f"project '{name}': no distribution files")
        return scan
    finals = [v for v in by_version if not v.is_prerelease]
    newest = max(finals or list(by_version))
    if newest not in wheels:
        scan.error(
            "pypi",
            url,
            f"project '{name}' {newest}: no wheel (an sdist's metadata may need its build code "
            "to run, so it is not read)",
        )
        return scan
    tags = set(sys_tags())
    usable = [f for f in wheels[newest] if parse_wheel_filename(f.filename)[3] & tags]
    chosen = (usable or wheels[newest])[0]
    try:
        info = wheel_info(client, chosen, cache)
    except PackageIndexError as exc:
        scan.error("pypi", chosen.url, f"project '{name}' {newest}: {exc}")
        return scan
    meta = email.parser.HeaderParser().parsestr(str(info.get("metadata") or ""))
    version = str(meta.get("Version") or newest)
    summary = str(meta.get("Summary") or "")
    ptype = _type_keyword(meta)
    reasons: list[str] = []
    py_reason = _python_reason(str(meta.get("Requires-Python") or chosen.requires_python or ""))
    if py_reason:
        reasons.append(py_reason)
    if not usable:
        reasons.append(
            f"no wheel of {name} {newest} installs here "
            f"({', '.join(f.filename for f in wheels[newest])})"
        )
    manifests: list[dict[str, Any]] = []
    for member, text in info.get("manifests") or []:
        try:
            manifests.append(
                manifest_from_toml(
                    text,
                    f"{chosen.filename}!{member}",
                    defaults={"version": version, "description": summary},
                )
            )
        except ValueError as exc:
            scan.error("pypi", chosen.url, str(exc))
    if not manifests and not info.get("manifests"):
        for ep_name, value in _entry_points(info.get("entry_points")):
            target = value.split("[", 1)[0].strip().replace(":", ".")
            manifests.append(
                {
                    "name": ep_name,
                    "type": ptype,
                    "version": version,
                    "description": summary,
                    "class_path": target,
                }
            )
        if not manifests:
            plain = canonicalize_name(name)[len(PROJECT_PREFIX) :].replace("-", "_")
            manifests.append(
                {"name": plain, "type": ptype, "version": version, "description": summary}
            )
    canon = canonicalize_name(name)
    try:
        here: str | None = installed_version(canon)
    except PackageNotFoundError:
        here = None
    try:
        installed = here is not None and Version(here) == Version(version)
        pair = (canon, str(Version(version)))
    except InvalidVersion:
        installed, pair = False, (canon, version)
    for manifest in manifests:
        manifest.setdefault("metadata", {})
        scan.found.append(
            Found(
                "pypi",
                manifest,
                chosen.url,
                installed=installed,
                reasons=list(reasons),
                distribution=pair,
            )
        )
    return scan


def _guarded(client: httpx.Client, name: str, url: str, cache: _WheelCache) -> Scan:
    """One project; whatever goes wrong with it is an error entry for it alone."""
    try:
        return _project(client, name, url, cache)
    except Exception as exc:  # noqa: BLE001 - a malformed answer of any shape
        scan = Scan()
        scan.error("pypi", url, f"project '{name}': {type(exc).__name__}: {exc}")
        return scan


def scan_index(root: str, cache_folder: Path | None, timeout: float = NETWORK_TIMEOUT) -> Scan:
    """Every ``mlx-plugin-*`` project of the index at `root`, newest version each (with
    `installed` true when that very version is installed here)."""
    scan = Scan()
    root = root if root.endswith("/") else root + "/"
    cache = _WheelCache(cache_folder)
    headers = {"User-Agent": "mlx-platform discovery"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client:
        try:
            projects = list_projects(client, root)
        except (PackageIndexError, ValueError) as exc:
            scan.error("pypi", root, f"package index unreachable or unreadable: {exc}")
            return scan
        wanted = sorted(
            {
                canonicalize_name(n): (n, u)
                for n, u in projects
                if canonicalize_name(n).startswith(PROJECT_PREFIX)
            }.values()
        )
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mlx-index") as pool:
            for part in pool.map(lambda p: _guarded(client, p[0], p[1], cache), wanted):
                scan.extend(part)
    return scan
