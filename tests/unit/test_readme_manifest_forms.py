"""The README's "Writing a plugin" shows one manifest in its two forms side by side: read by
the service's own readers, the class attributes and the `mlx-plugin.toml` are the same
manifest."""

from __future__ import annotations

import re

from mlx_platform.plugins import Plugin, manifest_from_class
from mlx_platform.plugins._manifest import manifest_from_toml
from tests.conftest import ROOT


def _side_by_side() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### The manifest: one model, two forms") :]
    table = section[section.index("<table>") : section.index("</table>")]
    (python,) = re.findall(r"```python\n(.*?)```", table, re.S)
    (toml,) = re.findall(r"```toml\n(.*?)```", table, re.S)
    return python, toml


def test_the_two_forms_in_the_readme_are_one_manifest() -> None:
    python, toml = _side_by_side()
    from_toml = manifest_from_toml(toml, "README.md")
    scope: dict[str, object] = {"Plugin": Plugin}
    exec(compile(python, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    cls = scope["WarehouseSource"]
    assert isinstance(cls, type)
    from_class = manifest_from_class(cls, from_toml["class_path"])
    assert from_class == from_toml
