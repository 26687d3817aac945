"""`TabularFolderSource`: the CSV and Parquet files of one folder, read as tables."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from mlx_platform.plugins import Plugin, PluginError, operation

_FORMATS = {".csv": "csv", ".parquet": "parquet"}
_DELIMITERS = [",", ";", "\t", "|"]
_DEFAULT_MAX_ROWS = 1000
_PARQUET_HINT = 'reading Parquet files needs pyarrow: pip install "mlx-platform[parquet]"'

# CSV cells are text; these decide which columns read back as numbers. No leading zeros, so
# identifiers such as "007" stay strings; no "nan"/"inf", which JSON cannot carry.
_INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}


def _cell_kind(text: str) -> str | None:
    """The narrowest type one CSV cell fits; None for an empty cell."""
    if text == "":
        return None
    if _INTEGER.fullmatch(text):
        return "integer"
    if _NUMBER.fullmatch(text) and math.isfinite(float(text)):
        return "number"
    if text.lower() in _BOOLEANS:
        return "boolean"
    return "string"


def _column_kind(kinds: set[str | None]) -> str:
    """One type for a CSV column: the narrowest that fits all its non-empty cells."""
    kinds.discard(None)
    if kinds == {"integer"}:
        return "integer"
    if kinds and kinds <= {"integer", "number"}:
        return "number"
    if kinds == {"boolean"}:
        return "boolean"
    return "string"


def _convert(text: str, kind: str) -> Any:
    if kind == "string":
        return text
    if text == "":
        return None
    if kind == "integer":
        return int(text)
    if kind == "number":
        return float(text)
    return _BOOLEANS[text.lower()]


def _json_value(value: Any) -> Any:
    """A Parquet value as JSON: dates as ISO text, decimals as exact text, NaN/inf as null."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def _parquet() -> Any:
    """`pyarrow.parquet`, imported only when a Parquet file is read: pyarrow is optional."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise PluginError(_PARQUET_HINT) from exc
    return pq


def _arrow_kind(arrow_type: Any) -> str:
    """Arrow types in the same words the CSV inference uses, where one fits."""
    import pyarrow.types as pat

    if pat.is_integer(arrow_type):
        return "integer"
    if pat.is_floating(arrow_type) or pat.is_decimal(arrow_type):
        return "number"
    if pat.is_boolean(arrow_type):
        return "boolean"
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type):
        return "string"
    if pat.is_timestamp(arrow_type):
        return "timestamp"
    if pat.is_date(arrow_type):
        return "date"
    return str(arrow_type)


class TabularFolderSource(Plugin):
    """Serve the CSV and Parquet files of one folder as named datasets."""

    name: ClassVar[str | None] = "tabular_folder"
    type: ClassVar[str | None] = "data_source"
    version: ClassVar[str | None] = "1.0.0"
    description: ClassVar[str] = (
        "Lists and reads the CSV and Parquet files of a folder, with their column types. "
        'Parquet needs pyarrow (pip install "mlx-platform[parquet]").'
    )
    configuration_schema: ClassVar[dict[str, Any]] = {
        "folder": {
            "type": "string",
            "required": True,
            "description": "Folder holding the data files; nothing outside it is ever read",
        },
        "pattern": {
            "type": "string",
            "default": "*",
            "description": "Glob, relative to the folder, selecting the files served",
        },
        "csv_delimiter": {
            "type": "string",
            "default": ",",
            "enum": _DELIMITERS,
            "description": "Field separator of the CSV files",
        },
        "max_rows": {
            "type": "integer",
            "default": _DEFAULT_MAX_ROWS,
            "minimum": 1,
            "description": "Most rows one read returns; also the CSV type-inference sample",
        },
    }
    metadata: ClassVar[dict[str, Any]] = {
        "category": "files",
        "capabilities": ["batch_read", "schema_inference"],
        "data_formats": ["csv", "parquet"],
        "integration_points": ["feature_stores", "ml_platforms"],
        "conflicts_with": [],
        "requires": [],
        "optional_deps": [],
        "supported_platforms": ["linux", "darwin", "win32"],
        "min_python_version": "3.11",
        "min_memory_mb": 64,
        "min_cpu_cores": 0.1,
        "gpu_required": False,
    }

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: dict[str, Any]) -> None:
        """Check what the schema cannot express (a pattern must stay inside the folder)."""
        folder = config.get("folder")
        if not isinstance(folder, str) or not folder.strip():
            raise PluginError("folder is required and must be a non-empty string")
        pattern = config.get("pattern", "*")
        if not isinstance(pattern, str) or not pattern:
            raise PluginError("pattern must be a non-empty glob")
        pure = PurePosixPath(pattern.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or Path(pattern).is_absolute():
            raise PluginError("pattern must be relative to the folder and not contain '..'")
        if config.get("csv_delimiter", ",") not in _DELIMITERS:
            raise PluginError("csv_delimiter must be one of: " + ", ".join(map(repr, _DELIMITERS)))
        super().configure(config)

    def start(self) -> None:
        """Fail activation early when the folder is missing."""
        folder = self._folder()
        if not folder.is_dir():
            raise PluginError(f"folder not found: {folder}")

    def health_check(self) -> dict[str, Any]:
        """Healthy while the folder exists and can be listed and read."""
        folder = self._folder()
        if not folder.is_dir():
            return {"status": "unhealthy", "message": f"folder not found: {folder}"}
        if not os.access(folder, os.R_OK | os.X_OK):
            return {"status": "unhealthy", "message": f"folder not readable: {folder}"}
        return {"status": "healthy", "message": f"folder readable: {folder}"}

    # ------------------------------------------------------------------ helpers

    def _folder(self) -> Path:
        return Path(str(self.config.get("folder", ""))).expanduser().resolve()

    @property
    def _max_rows(self) -> int:
        return int(self.config.get("max_rows", _DEFAULT_MAX_ROWS))

    def _datasets(self) -> dict[str, Path]:
        """The files served, by name (path relative to the folder, with '/')."""
        folder = self._folder()
        found: dict[str, Path] = {}
        for path in sorted(folder.glob(str(self.config.get("pattern", "*")))):
            if path.suffix.lower() not in _FORMATS or not path.is_file():
                continue
            # A symlink may point outside the folder: serve only what resolves inside it.
            if not path.resolve().is_relative_to(folder):
                continue
            found[path.relative_to(folder).as_posix()] = path
        return found

    def _dataset(self, name: str) -> Path:
        """The file a name stands for; names that leave the folder are refused outright."""
        if not isinstance(name, str) or not name:
            raise PluginError("name must be a non-empty string")
        folder = self._folder()
        pure = PurePosixPath(name.replace("\\", "/"))
        if (
            pure.is_absolute()
            or Path(name).is_absolute()
            or ".." in pure.parts
            or not (folder / pure).resolve().is_relative_to(folder)
        ):
            raise PluginError(f"dataset name {name!r} points outside the folder")
        path = self._datasets().get(pure.as_posix())
        if path is None:
            raise PluginError(f"no dataset named {name!r}; list_datasets shows the names")
        return path

    def _csv_sample(self, path: Path) -> tuple[list[str], list[list[str]], bool]:
        """Header, the first `max_rows` rows (padded to the header), and whether more follow."""
        limit = self._max_rows
        delimiter = str(self.config.get("csv_delimiter", ","))
        header: list[str] | None = None
        rows: list[list[str]] = []
        more = False
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh, delimiter=delimiter)
                for line in reader:
                    if not line:
                        continue  # blank line
                    if header is None:
                        header = line
                        continue
                    if len(rows) == limit:
                        more = True
                        break
                    if len(line) > len(header):
                        raise PluginError(
                            f"{path.name}: line {reader.line_num} has {len(line)} fields, "
                            f"the header has {len(header)}"
                        )
                    rows.append(line + [""] * (len(header) - len(line)))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PluginError(f"cannot read {path.name} as CSV: {exc}") from exc
        return header or [], rows, more

    @staticmethod
    def _csv_kinds(header: list[str], rows: list[list[str]]) -> list[str]:
        return [_column_kind({_cell_kind(row[i]) for row in rows}) for i in range(len(header))]

    # ------------------------------------------------------------------ operations

    @operation
    def list_datasets(self) -> list[dict[str, Any]]:
        """The CSV and Parquet files matching `pattern`, with their format and size."""
        try:
            datasets = self._datasets()
            return [
                {
                    "name": name,
                    "format": _FORMATS[path.suffix.lower()],
                    "size_bytes": path.stat().st_size,
                }
                for name, path in datasets.items()
            ]
        except OSError as exc:
            raise PluginError(f"cannot list the folder: {exc}") from exc

    @operation
    def read(self, name: str, limit: int | None = None) -> dict[str, Any]:
        """The first `limit` rows (at most `max_rows`) of a dataset, typed per column."""
        if limit is None:
            limit = self._max_rows
        elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise PluginError("limit must be a positive integer")
        limit = min(limit, self._max_rows)
        path = self._dataset(name)
        if _FORMATS[path.suffix.lower()] == "parquet":
            return self._read_parquet(path, limit)
        header, sample, more = self._csv_sample(path)
        kinds = self._csv_kinds(header, sample)
        rows = [
            [_convert(cell, kind) for cell, kind in zip(row, kinds, strict=True)]
            for row in sample[:limit]
        ]
        truncated = more or len(sample) > limit
        return {"columns": header, "rows": rows, "row_count": len(rows), "truncated": truncated}

    def _read_parquet(self, path: Path, limit: int) -> dict[str, Any]:
        pq = _parquet()
        rows: list[list[Any]] = []
        try:
            with pq.ParquetFile(path) as pf:
                columns = list(pf.schema_arrow.names)
                total = pf.metadata.num_rows
                for batch in pf.iter_batches(batch_size=min(limit, 65536)):
                    values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                    for row in zip(*values, strict=True):
                        rows.append([_json_value(v) for v in row])
                        if len(rows) == limit:
                            break
                    if len(rows) == limit:
                        break
        except (OSError, ValueError) as exc:
            raise PluginError(f"cannot read {path.name} as Parquet: {exc}") from exc
        return {
            "columns": columns,
            "rows": rows,
            "row_count": len(rows),
            "truncated": total > len(rows),
        }

    @operation
    def schema(self, name: str) -> dict[str, Any]:
        """Column names, types and nullability; CSV types come from the first `max_rows` rows."""
        path = self._dataset(name)
        fmt = _FORMATS[path.suffix.lower()]
        if fmt == "parquet":
            pq = _parquet()
            try:
                arrow_schema = pq.read_schema(path)
            except (OSError, ValueError) as exc:
                raise PluginError(f"cannot read {path.name} as Parquet: {exc}") from exc
            columns = [
                {"name": f.name, "type": _arrow_kind(f.type), "nullable": f.nullable}
                for f in arrow_schema
            ]
        else:
            header, sample, _ = self._csv_sample(path)
            kinds = self._csv_kinds(header, sample)
            columns = [
                {
                    "name": col,
                    "type": kind,
                    "nullable": any(row[i] == "" for row in sample),
                }
                for i, (col, kind) in enumerate(zip(header, kinds, strict=True))
            ]
        return {"name": name, "format": fmt, "columns": columns}
