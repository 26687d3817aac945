"""`include_namespace`: the `Plugin` subclasses defined under a (namespace) package, from source.

As Sphinx finds its ``sphinxcontrib.*`` extensions, every module under the package (all its
portions on the path, at any depth) is read as text and parsed with `ast`; nothing is
imported, so no plugin code runs. A class counts when one of its bases is
`mlx_platform.plugins.Plugin` (however it was imported: ``from mlx_platform.plugins import
Plugin as Base``, ``import mlx_platform.plugins as p`` then ``p.Plugin``...) or another class
under the package that counts. Its manifest is its literal class attributes (``name``,
``type``, ``version``, ``description``, ``configuration_schema``, ``metadata``), inherited
from such bases too, with the defaults `manifest_from_class` uses (name: the class name in
lower case, type ``generic``, description: the docstring). An attribute computed at import
time cannot be read without running the code: it is reported as an error for that class.
Private classes (``_Name``) and classes with ``@abstractmethod`` methods are not plugins.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_platform.discovery.common import Scan
from mlx_platform.errors import ValidationError

PLUGIN_BASES = {"mlx_platform.plugins.Plugin", "mlx_platform.plugins._base.Plugin"}
MANIFEST_ATTRS = ("name", "type", "version", "description", "configuration_schema", "metadata")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MAX_FILES = 5000


@dataclass
class ClassInfo:
    qualname: str  # module.Class
    module: str
    name: str
    file: str
    line: int
    bases: list[str]  # resolved dotted names where they could be
    attrs: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    doc: str | None = None
    abstract: bool = False


def check_namespace_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 200:
        raise ValidationError(
            f"Invalid query parameter 'include_namespace': '{name}' is not a dotted package name",
            {"include_namespace": "must be a dotted Python package name, e.g. mlx_plugins"},
        )


def portions(name: str, search_path: list[str]) -> list[Path]:
    """The folders of package `name` on the search path (several for a namespace package)."""
    parts = name.split(".")
    found: list[Path] = []
    seen: set[str] = set()
    for entry in search_path:
        base = Path(entry or os.getcwd())
        candidate = base.joinpath(*parts)
        try:
            if candidate.is_dir():
                real = os.path.realpath(candidate)
                if real not in seen:
                    seen.add(real)
                    found.append(candidate)
        except OSError:
            continue
    return found


def _modules(package: str, folder: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if d.isidentifier() and not d.startswith(".") and d != "__pycache__"
        )
        rel = Path(root).relative_to(folder)
        prefix = ".".join([package, *rel.parts]) if rel.parts else package
        for fname in sorted(files):
            if not fname.endswith(".py"):
                continue
            stem = fname[:-3]
            if stem == "__init__":
                out.append((prefix, Path(root, fname)))
            elif stem.isidentifier():
                out.append((f"{prefix}.{stem}", Path(root, fname)))
        if len(out) > _MAX_FILES:
            break
    return out


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    if isinstance(node, ast.Subscript):  # Generic[T]-style bases
        return _dotted(node.value)
    return None


def _imports(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the module's imports."""
    names: dict[str, str] = {}
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def _resolve(dotted: str, imports: dict[str, str], module: str, local: set[str]) -> str:
    head, _, rest = dotted.partition(".")
    if head in imports:
        full = imports[head]
        return f"{full}.{rest}" if rest else full
    if head in local:
        return f"{module}.{dotted}"
    return dotted


def _is_abstract(node: ast.ClassDef) -> bool:
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in item.decorator_list:
                name = _dotted(deco)
                if name and name.split(".")[-1] == "abstractmethod":
                    return True
    return False


def _classes(module: str, path: Path, is_package: bool) -> list[ClassInfo]:
    source = path.read_bytes()
    tree = ast.parse(source, filename=str(path))
    imports = _imports(tree, module, is_package)
    local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    out: list[ClassInfo] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = []
        for base in node.bases:
            dotted = _dotted(base)
            if dotted:
                bases.append(_resolve(dotted, imports, module, local))
        info = ClassInfo(
            qualname=f"{module}.{node.name}",
            module=module,
            name=node.name,
            file=str(path),
            line=node.lineno,
            bases=bases,
            doc=ast.get_docstring(node),
            abstract=_is_abstract(node),
        )
        for item in node.body:
            target: ast.expr | None = None
            value: ast.expr | None = None
            if isinstance(item, ast.Assign) and len(item.targets) == 1:
                target, value = item.targets[0], item.value
            elif isinstance(item, ast.AnnAssign) and item.value is not None:
                target, value = item.target, item.value
            if not isinstance(target, ast.Name) or target.id not in MANIFEST_ATTRS:
                continue
            assert value is not None
            try:
                info.attrs[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                info.unreadable.append(target.id)
        out.append(info)
    return out


def _manifest(info: ClassInfo, by_name: dict[str, ClassInfo]) -> tuple[dict[str, Any], list[str]]:
    """Literal attributes along the class's bases under the package, nearest last."""
    chain: list[ClassInfo] = []
    todo, seen = [info], set()
    while todo:
        cls = todo.pop()
        if cls.qualname in seen:
            continue
        seen.add(cls.qualname)
        chain.append(cls)
        todo += [by_name[b] for b in reversed(cls.bases) if b in by_name]
    attrs: dict[str, Any] = {}
    unreadable: list[str] = []
    for cls in reversed(chain):
        for key in cls.unreadable:
            attrs.pop(key, None)
            unreadable.append(key)
        for key, value in cls.attrs.items():
            attrs[key] = value
            if key in unreadable:
                unreadable.remove(key)
    manifest = {
        "name": attrs.get("name") or info.name.lower(),
        "type": attrs.get("type") or "generic",
        "version": str(attrs.get("version") or "0.0.0"),
        "description": attrs.get("description") or (info.doc or "").strip(),
        "class_path": info.qualname,
        "configuration_schema": dict(attrs.get("configuration_schema") or {}),
        "metadata": dict(attrs.get("metadata") or {}),
    }
    return manifest, sorted(set(unreadable) - {"description"})


def scan_namespace(name: str, search_path: list[str] | None = None) -> Scan:
    check_namespace_name(name)
    scan = Scan()
    folders = portions(name, list(search_path if search_path is not None else sys.path))
    if not folders:
        scan.error("namespace", name, f"no package '{name}' on the path")
        return scan
    classes: list[ClassInfo] = []
    seen_modules: set[str] = set()
    for folder in folders:
        for module, path in _modules(name, folder):
            if module in seen_modules and path.name != "__init__.py":
                continue  # an earlier portion on the path shadows this module
            seen_modules.add(module)
            try:
                classes += _classes(module, path, path.name == "__init__.py")
            except SyntaxError as exc:
                scan.error(
                    "namespace", f"{path}:{exc.lineno}", f"{module}: not valid Python: {exc.msg}"
                )
            except (OSError, ValueError, RecursionError) as exc:
                scan.error("namespace", str(path), f"{module}: cannot be read: {exc}")
    by_name = {c.qualname: c for c in classes}
    plugin: dict[str, bool] = {}

    def is_plugin(cls: ClassInfo, stack: frozenset[str] = frozenset()) -> bool:
        if cls.qualname in plugin:
            return plugin[cls.qualname]
        result = False
        for base in cls.bases:
            if base in PLUGIN_BASES:
                result = True
            elif base in by_name and base not in stack:
                result = is_plugin(by_name[base], stack | {cls.qualname})
            if result:
                break
        plugin[cls.qualname] = result
        return result

    for cls in classes:
        if not is_plugin(cls) or cls.name.startswith("_") or cls.abstract:
            continue
        location = f"{cls.file}:{cls.line}"
        manifest, unreadable = _manifest(cls, by_name)
        if unreadable:
            scan.error(
                "namespace",
                location,
                f"{cls.qualname}: class attribute(s) {', '.join(unreadable)} are computed at "
                "import time; discovery reads only literal values",
            )
            continue
        scan.add("namespace", manifest, location, label=cls.qualname)
    return scan
