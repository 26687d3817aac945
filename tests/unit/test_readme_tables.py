"""The README's tables of error codes and exit codes are those of `errors.ERROR_TABLE`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "readme_tables.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_written_from_the_error_table() -> None:
    assert _module().main(["--check"]) == 0, "run: python scripts/readme_tables.py"


def test_a_changed_row_of_the_table_would_show_as_drift() -> None:
    tables = _module()
    text = tables.README.read_text(encoding="utf-8")
    drifted = text.replace("| `PLUGIN_NOT_FOUND` | 404 |", "| `PLUGIN_NOT_FOUND` | 410 |")
    assert drifted != text
    assert tables.render(drifted) == text  # the table is written afresh from ERROR_TABLE


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(SystemExit, match="error-codes"):
        _module().render("no tables here")
