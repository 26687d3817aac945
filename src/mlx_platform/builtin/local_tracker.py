"""`LocalTracker`: experiment runs kept as JSON files, optionally signed against tampering."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from mlx_platform.plugins import Plugin, PluginError, operation

_EXPERIMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_EXPERIMENT = re.compile(_EXPERIMENT_PATTERN)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_END_STATUSES = ("finished", "failed", "killed")
_DEFAULT_EXPERIMENT = "default"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _canonical(record: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the record without its signature, in one fixed form."""
    body = {k: v for k, v in record.items() if k != "signature"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check_json_object(value: Any, what: str) -> dict[str, Any]:
    """A dict with string keys that JSON can store, or a PluginError naming `what`."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise PluginError(f"{what} must be an object with string keys")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{what} must hold only JSON values: {exc}") from None
    return dict(value)


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalTracker(Plugin):
    """Track experiment runs (params, metric histories, status) in a local folder."""

    name: ClassVar[str | None] = "local_tracker"
    type: ClassVar[str | None] = "experiment_tracker"
    version: ClassVar[str | None] = "1.0.0"
    description: ClassVar[str] = (
        "Records experiment runs (parameters, metric histories, tags, status) as JSON files "
        "in a local folder; with a signing key, each record is HMAC-signed so edits made "
        "outside the tracker are detected."
    )
    configuration_schema: ClassVar[dict[str, Any]] = {
        "root": {
            "type": "string",
            "required": True,
            "description": "Folder holding the runs; created on start",
        },
        "signing_key": {
            "type": "string",
            "required": False,
            "secret": True,
            "description": "HMAC key signing each run record so tampering is detected",
        },
        "experiment": {
            "type": "string",
            "default": _DEFAULT_EXPERIMENT,
            "pattern": _EXPERIMENT_PATTERN,
            "description": "Experiment new runs belong to (a sub-folder of root)",
        },
    }
    metadata: ClassVar[dict[str, Any]] = {
        "category": "tracking",
        "capabilities": ["run_tracking", "metric_logging", "param_logging"],
        "data_formats": [],
        "integration_points": ["ml_platforms", "model_registry"],
        "conflicts_with": [],
        "requires": [],
        "optional_deps": [],
        "supported_platforms": ["linux", "darwin", "win32"],
        "min_python_version": "3.11",
        "min_memory_mb": 64,
        "min_cpu_cores": 0.1,
        "gpu_required": False,
    }

    def __init__(self) -> None:
        super().__init__()
        # Every read-modify-write of a run file happens under this lock.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: dict[str, Any]) -> None:
        """Check the fields that name files; the error never repeats the signing key."""
        root = config.get("root")
        if not isinstance(root, str) or not root.strip():
            raise PluginError("root is required and must be a non-empty string")
        self._check_experiment(config.get("experiment", _DEFAULT_EXPERIMENT))
        key = config.get("signing_key")
        if key is not None and not isinstance(key, str):
            raise PluginError("signing_key must be a string")
        super().configure(config)

    def start(self) -> None:
        """Create the root folder, so a bad path fails activation rather than the first run."""
        root = self._root()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PluginError(f"cannot create the root folder {root}: {exc.strerror}") from exc

    def health_check(self) -> dict[str, Any]:
        """Healthy while the root folder exists and runs can be written to it."""
        root = self._root()
        if not root.is_dir():
            return {"status": "unhealthy", "message": f"root folder not found: {root}"}
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            return {"status": "unhealthy", "message": f"root folder not writable: {root}"}
        signed = "signed" if self._key() else "unsigned"
        return {"status": "healthy", "message": f"writing {signed} runs to {root}"}

    # ------------------------------------------------------------------ helpers

    def _root(self) -> Path:
        return Path(str(self.config.get("root", ""))).expanduser().resolve()

    def _experiment(self) -> str:
        return str(self.config.get("experiment") or _DEFAULT_EXPERIMENT)

    @staticmethod
    def _check_experiment(name: Any) -> str:
        if not isinstance(name, str) or not _EXPERIMENT.fullmatch(name):
            raise PluginError(
                "experiment must be 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return name

    def _key(self) -> bytes | None:
        key = self.config.get("signing_key")
        return key.encode("utf-8") if isinstance(key, str) and key else None

    def _sign(self, record: dict[str, Any]) -> None:
        """Sign `record` in place with the configured key; without one, drop any stale signature."""
        record.pop("signature", None)
        key = self._key()
        if key is not None:
            record["signature"] = hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()

    def _verified(self, record: dict[str, Any], run_id: str, experiment: str) -> bool | None:
        """None without a key; else whether the signature holds and the record is where it
        claims to be (a signed record copied over another run's file does not verify)."""
        key = self._key()
        if key is None:
            return None
        signature = record.get("signature")
        if not isinstance(signature, str):
            return False
        try:
            expected = hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()
        except (TypeError, ValueError):
            return False
        return (
            hmac.compare_digest(signature, expected)
            and record.get("run_id") == run_id
            and record.get("experiment") == experiment
        )

    def _find(self, run_id: Any) -> Path:
        """The file of a run, in any experiment; ids are checked first, so never a path."""
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise PluginError(f"unknown run {str(run_id)[:64]!r}")
        root = self._root()
        preferred = root / self._experiment() / f"{run_id}.json"
        if preferred.is_file():
            return preferred
        for path in sorted(root.glob(f"*/{run_id}.json")):
            if path.is_file():
                return path
        raise PluginError(f"unknown run {run_id!r}")

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PluginError(f"run record {path.name} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise PluginError(f"run record {path.name} is not a JSON object")
        return data

    def _save(self, path: Path, record: dict[str, Any]) -> None:
        self._sign(record)
        try:
            _write_atomic(path, record)
        except OSError as exc:
            raise PluginError(f"cannot write run record {path}: {exc.strerror}") from exc

    def _public(self, record: dict[str, Any], path: Path) -> dict[str, Any]:
        """The record as callers see it: no signature, plus whether it verified."""
        out = {k: v for k, v in record.items() if k != "signature"}
        out["verified"] = self._verified(record, path.stem, path.parent.name)
        return out

    def _update(self, run_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, change and re-sign a run. A signed run that fails verification is left as it
        is: re-signing it would launder the tampering."""
        with self._lock:
            path = self._find(run_id)
            record = self._load(path)
            if self._verified(record, path.stem, path.parent.name) is False:
                raise PluginError(
                    f"run {run_id} fails its signature check; it was changed outside the "
                    "tracker (or signed with another key) and is not modified"
                )
            change(record)
            self._save(path, record)
            return record

    # ------------------------------------------------------------------ operations

    @operation
    def create_run(
        self,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a run in the configured experiment."""
        if name is not None and not isinstance(name, str):
            raise PluginError("name must be a string")
        run_id = uuid.uuid4().hex
        experiment = self._experiment()
        record: dict[str, Any] = {
            "run_id": run_id,
            "name": name or f"run-{run_id[:8]}",
            "experiment": experiment,
            "status": "running",
            "start_time": _now(),
            "end_time": None,
            "params": _check_json_object(params, "params"),
            "tags": _check_json_object(tags, "tags"),
            "metrics": {},
        }
        path = self._root() / experiment / f"{run_id}.json"
        with self._lock:
            self._save(path, record)
        return self._public(record, path)

    @operation
    def log_params(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Add parameters to a run; a name logged again takes the new value."""
        new = _check_json_object(params, "params")
        record = self._update(run_id, lambda rec: rec.setdefault("params", {}).update(new))
        return {"run_id": run_id, "params": record["params"]}

    @operation
    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int | None = None
    ) -> dict[str, Any]:
        """Append one value per metric to its history; without `step`, the next index."""
        if not isinstance(metrics, dict) or not metrics:
            raise PluginError("metrics must be a non-empty object of name: number")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise PluginError("step must be an integer")
        values: dict[str, float] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise PluginError("metric names must be non-empty strings")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PluginError(f"metric {key!r} must be a number")
            if not math.isfinite(value):
                raise PluginError(f"metric {key!r} must be finite (no NaN or infinity)")
            values[key] = float(value)
        logged: dict[str, dict[str, Any]] = {}

        def append(record: dict[str, Any]) -> None:
            histories = record.setdefault("metrics", {})
            if not isinstance(histories, dict):
                raise PluginError(f"run {run_id} has a malformed metrics field")
            at = _now()
            for key, value in values.items():
                history = histories.setdefault(key, [])
                entry = {
                    "value": value,
                    "step": len(history) if step is None else step,
                    "timestamp": at,
                }
                history.append(entry)
                logged[key] = entry

        self._update(run_id, append)
        return {"run_id": run_id, "metrics": logged}

    @operation
    def end_run(self, run_id: str, status: str = "finished") -> dict[str, Any]:
        """Close a running run with a final status."""
        if status not in _END_STATUSES:
            raise PluginError("status must be one of: " + ", ".join(_END_STATUSES))

        def close(record: dict[str, Any]) -> None:
            if record.get("status") != "running":
                raise PluginError(f"run {run_id} has already ended ({record.get('status')})")
            record["status"] = status
            record["end_time"] = _now()

        record = self._update(run_id, close)
        return {"run_id": run_id, "status": record["status"], "end_time": record["end_time"]}

    @operation
    def get_run(self, run_id: str) -> dict[str, Any]:
        """The full run record; ``verified`` is true/false with a signing key, else null."""
        with self._lock:
            path = self._find(run_id)
            record = self._load(path)
        return self._public(record, path)

    @operation
    def list_runs(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """Summaries of an experiment's runs (the configured one by default), newest first."""
        experiment = self._check_experiment(
            self._experiment() if experiment is None else experiment
        )
        folder = self._root() / experiment
        summaries: list[dict[str, Any]] = []
        with self._lock:
            paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
            for path in paths:
                if not _RUN_ID.fullmatch(path.stem):
                    continue
                try:
                    record = self._load(path)
                except PluginError:
                    summaries.append({"run_id": path.stem, "status": "unreadable"})
                    continue
                metrics = record.get("metrics")
                if not isinstance(metrics, dict):
                    metrics = {}
                summaries.append(
                    {
                        "run_id": path.stem,
                        "name": record.get("name"),
                        "experiment": experiment,
                        "status": record.get("status"),
                        "start_time": record.get("start_time"),
                        "end_time": record.get("end_time"),
                        "metrics": {
                            k: h[-1].get("value")
                            for k, h in metrics.items()
                            if isinstance(h, list) and h and isinstance(h[-1], dict)
                        },
                        "verified": self._verified(record, path.stem, experiment),
                    }
                )
        summaries.sort(key=lambda s: (str(s.get("start_time") or ""), s["run_id"]), reverse=True)
        return summaries
