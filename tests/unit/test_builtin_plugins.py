"""The example plugins, driven through their lifecycle on real files in a temporary folder."""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlx_platform.builtin import (
    BUILTIN_PLUGINS,
    LocalTracker,
    SQLiteSource,
    TabularFolderSource,
)
from mlx_platform.composition import rules
from mlx_platform.core import config_schema
from mlx_platform.plugins import Plugin, PluginError, manifest_from_class, operations_of
from mlx_platform.wire import RegisterPluginRequest

P = TypeVar("P", bound=Plugin)


def running(plugin: P, **config: Any) -> P:
    """The plugin configured with `config` and started, as the service would do it."""
    plugin.configure(config)
    plugin.start()
    return plugin


# ---------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    ("cls", "name", "type_", "operations"),
    [
        (SQLiteSource, "sqlite_source", "data_source", {"query", "tables", "describe"}),
        (TabularFolderSource, "tabular_folder", "data_source", {"list_datasets", "read", "schema"}),
        (
            LocalTracker,
            "local_tracker",
            "experiment_tracker",
            {"create_run", "log_params", "log_metrics", "end_run", "get_run", "list_runs"},
        ),
    ],
)
def test_manifest_from_class(
    cls: type[Plugin], name: str, type_: str, operations: set[str]
) -> None:
    manifest = manifest_from_class(cls)
    assert (manifest["name"], manifest["type"], manifest["version"]) == (name, type_, "1.0.0")
    assert manifest["class_path"] == f"{cls.__module__}.{cls.__name__}"
    assert manifest["description"]
    # What the service checks on registration holds for each of them.
    RegisterPluginRequest.model_validate(manifest)
    assert config_schema.check_schema_definition(manifest["configuration_schema"]) == {}
    assert rules.check_metadata(manifest["metadata"]) == {}
    meta = manifest["metadata"]
    assert meta["supported_platforms"] == ["linux", "darwin", "win32"]
    assert meta["min_python_version"] == "3.11" and meta["gpu_required"] is False
    assert set(operations_of(cls)) == operations


def test_builtin_plugins_list() -> None:
    assert BUILTIN_PLUGINS == [SQLiteSource, TabularFolderSource, LocalTracker]
    names = [manifest_from_class(cls)["name"] for cls in BUILTIN_PLUGINS]
    assert names == ["sqlite_source", "tabular_folder", "local_tracker"]


def test_configuration_schemas() -> None:
    tracker = manifest_from_class(LocalTracker)["configuration_schema"]
    assert tracker["signing_key"]["secret"] is True
    assert tracker["signing_key"]["required"] is False
    assert tracker["root"]["required"] is True
    assert config_schema.secret_fields(tracker) == {"signing_key"}

    sqlite_schema = manifest_from_class(SQLiteSource)["configuration_schema"]
    assert config_schema.cold_fields(sqlite_schema) == {"read_only"}
    assert config_schema.validate_configuration(sqlite_schema, {"database_path": "x"}) == {}
    problems = config_schema.validate_configuration(
        sqlite_schema, {"database_path": "x", "max_rows": 0, "timeout": 301}
    )
    assert set(problems) == {"max_rows", "timeout"}

    folder_schema = manifest_from_class(TabularFolderSource)["configuration_schema"]
    assert "csv_delimiter" in config_schema.validate_configuration(
        folder_schema, {"folder": "x", "csv_delimiter": ":"}
    )
    assert "experiment" in config_schema.validate_configuration(
        tracker, {"root": "x", "experiment": "../up"}
    )


# ---------------------------------------------------------------- SQLiteSource


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "data.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            """
            CREATE TABLE items (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                score REAL,
                payload BLOB
            );
            INSERT INTO items (name, score, payload) VALUES ('a', 1.5, x'00ff'),
                ('b', 2.5, NULL), ('c', NULL, NULL);
            CREATE VIEW good_items AS SELECT id, name FROM items WHERE score > 2;
            """
        )
        conn.execute('CREATE TABLE "odd ""name""" (x TEXT)')
        conn.commit()
    return path


@pytest.fixture()
def sqlite_source(db_path: Path) -> Iterator[SQLiteSource]:
    source = SQLiteSource()
    running(source, database_path=str(db_path))
    yield source
    source.stop()


def test_sqlite_query(sqlite_source: SQLiteSource) -> None:
    result = sqlite_source.query("SELECT id, name, score, payload FROM items ORDER BY id")
    assert result["columns"] == ["id", "name", "score", "payload"]
    assert result["rows"][0] == [1, "a", 1.5, base64.b64encode(b"\x00\xff").decode()]
    assert result["rows"][2] == [3, "c", None, None]
    assert (result["row_count"], result["truncated"]) == (3, False)
    json.dumps(result)

    by_position = sqlite_source.query("SELECT name FROM items WHERE score > ?", [2])
    by_name = sqlite_source.query("SELECT name FROM items WHERE score > :s", {"s": 2})
    assert by_position["rows"] == by_name["rows"] == [["b"]]


def test_sqlite_max_rows_truncates(db_path: Path) -> None:
    source = SQLiteSource()
    running(source, database_path=str(db_path), max_rows=2)
    try:
        result = source.query("SELECT id FROM items ORDER BY id")
        assert result == {"columns": ["id"], "rows": [[1], [2]], "row_count": 2, "truncated": True}
    finally:
        source.stop()


def test_sqlite_read_only_refuses_writes(sqlite_source: SQLiteSource, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="readonly|read-only"):
        sqlite_source.query("INSERT INTO items (name) VALUES ('x')")
    with pytest.raises(PluginError, match="not authorized"):
        sqlite_source.query(f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other")
    assert not (tmp_path / "other.db").exists()
    assert sqlite_source.query("SELECT count(*) FROM items")["rows"] == [[3]]


def test_sqlite_bad_sql_and_parameters(sqlite_source: SQLiteSource) -> None:
    with pytest.raises(PluginError, match="query failed"):
        sqlite_source.query("SELEC nothing")
    with pytest.raises(PluginError, match="query failed"):
        sqlite_source.query("SELECT * FROM missing_table")
    with pytest.raises(PluginError, match="parameters"):
        sqlite_source.query("SELECT ?", "not-a-list")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="non-empty"):
        sqlite_source.query("   ")


def test_sqlite_tables_and_describe(sqlite_source: SQLiteSource) -> None:
    # sqlite_sequence (made by AUTOINCREMENT) is SQLite's own and not listed.
    assert sqlite_source.tables() == ["good_items", "items", 'odd "name"']
    assert sqlite_source.describe("items") == [
        {"name": "id", "type": "INTEGER", "notnull": False, "pk": True},
        {"name": "name", "type": "TEXT", "notnull": True, "pk": False},
        {"name": "score", "type": "REAL", "notnull": False, "pk": False},
        {"name": "payload", "type": "BLOB", "notnull": False, "pk": False},
    ]
    assert [c["name"] for c in sqlite_source.describe("good_items")] == ["id", "name"]
    assert sqlite_source.describe('odd "name"') == [
        {"name": "x", "type": "TEXT", "notnull": False, "pk": False}
    ]


def test_sqlite_describe_unknown_or_hostile_table(sqlite_source: SQLiteSource) -> None:
    with pytest.raises(PluginError, match="no table or view named 'nope'"):
        sqlite_source.describe("nope")
    with pytest.raises(PluginError, match="no table or view"):
        sqlite_source.describe('items"); DROP TABLE items; --')
    assert "items" in sqlite_source.tables()


def test_sqlite_health(db_path: Path) -> None:
    source = SQLiteSource()
    source.configure({"database_path": str(db_path)})
    assert source.health_check()["status"] == "unhealthy"
    source.start()
    health = source.health_check()
    assert health["status"] == "healthy" and "read-only" in health["message"]
    source.stop()
    assert source.health_check()["status"] == "unhealthy"
    with pytest.raises(PluginError, match="not started"):
        source.tables()
    source.stop()  # a second stop is harmless


def test_sqlite_start_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(PluginError, match="not found"):
        running(SQLiteSource(), database_path=str(missing))
    assert not missing.exists()

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, only some text long enough" * 4)
    with pytest.raises(PluginError, match="cannot read database"):
        running(SQLiteSource(), database_path=str(garbage))

    with pytest.raises(PluginError, match="database_path"):
        SQLiteSource().configure({"database_path": ""})


def test_sqlite_read_write_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    source = SQLiteSource()
    running(source, database_path=str(path), read_only=False)
    try:
        source.query("CREATE TABLE t (v INTEGER)")
        source.query("INSERT INTO t VALUES (?), (?)", [1, 2])
        assert source.query("SELECT sum(v) FROM t")["rows"] == [[3]]
        assert source.health_check()["message"] == "connected (read-write)"
    finally:
        source.stop()
    # Committed: another connection sees the rows.
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_sqlite_hot_reconfigure_switches_database(
    sqlite_source: SQLiteSource, db_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE others (v)")
        conn.commit()
    sqlite_source.configure({"database_path": str(other)})
    assert sqlite_source.tables() == ["others"]
    # A failing switch keeps the working connection and configuration.
    with pytest.raises(PluginError):
        sqlite_source.configure({"database_path": str(tmp_path / "missing.db")})
    assert sqlite_source.tables() == ["others"]
    sqlite_source.configure({"database_path": str(other), "timeout": 1.0})
    assert sqlite_source.query("PRAGMA busy_timeout")["rows"] == [[1000]]


def test_sqlite_calls_from_many_threads(sqlite_source: SQLiteSource) -> None:
    def work(i: int) -> int:
        rows = sqlite_source.query("SELECT count(*) + ? FROM items", [i])["rows"]
        sqlite_source.health_check()
        return int(rows[0][0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(40))) == [3 + i for i in range(40)]


# ---------------------------------------------------------------- TabularFolderSource


@pytest.fixture()
def data_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text(
        "id,name,score,flag,code\n1,alpha,0.5,true,007\n2,beta,,false,010\n\n3,gamma,2,TRUE,\n",
        encoding="utf-8",
    )
    (folder / "notes.txt").write_text("not a dataset")
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "value": pa.array([1.0, math.nan, None], pa.float64()),
            "label": pa.array(["x", None, "z"], pa.string()),
            "at": pa.array([datetime(2024, 1, 2, 3, 4, 5)] * 3, pa.timestamp("us")),
        }
    )
    pq.write_table(table, folder / "events.parquet")
    (folder / "nested").mkdir()
    (folder / "nested" / "deep.csv").write_text("a\n1\n")
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    return folder


@pytest.fixture()
def folder_source(data_folder: Path) -> Iterator[TabularFolderSource]:
    source = TabularFolderSource()
    running(source, folder=str(data_folder))
    yield source
    source.stop()


def test_folder_list_datasets(folder_source: TabularFolderSource, data_folder: Path) -> None:
    assert folder_source.list_datasets() == [
        {
            "name": "events.parquet",
            "format": "parquet",
            "size_bytes": (data_folder / "events.parquet").stat().st_size,
        },
        {
            "name": "train.csv",
            "format": "csv",
            "size_bytes": (data_folder / "train.csv").stat().st_size,
        },
    ]


def test_folder_pattern(data_folder: Path) -> None:
    recursive = running(TabularFolderSource(), folder=str(data_folder), pattern="**/*.csv")
    assert [d["name"] for d in recursive.list_datasets()] == ["nested/deep.csv", "train.csv"]
    assert recursive.read("nested/deep.csv")["rows"] == [[1]]

    only_train = running(TabularFolderSource(), folder=str(data_folder), pattern="train*")
    assert [d["name"] for d in only_train.list_datasets()] == ["train.csv"]
    with pytest.raises(PluginError, match="no dataset named 'events.parquet'"):
        only_train.read("events.parquet")

    for bad in ("../*", "/etc/*", "a/../../*"):
        with pytest.raises(PluginError, match="pattern"):
            TabularFolderSource().configure({"folder": str(data_folder), "pattern": bad})


def test_folder_read_csv_typed(folder_source: TabularFolderSource) -> None:
    result = folder_source.read("train.csv")
    assert result["columns"] == ["id", "name", "score", "flag", "code"]
    assert result["rows"] == [
        [1, "alpha", 0.5, True, "007"],
        [2, "beta", None, False, "010"],
        [3, "gamma", 2.0, True, ""],
    ]
    assert (result["row_count"], result["truncated"]) == (3, False)

    limited = folder_source.read("train.csv", limit=2)
    assert (limited["row_count"], limited["truncated"]) == (2, True)
    # The types come from the same sample, whatever the limit.
    assert limited["rows"] == result["rows"][:2]
    with pytest.raises(PluginError, match="limit"):
        folder_source.read("train.csv", limit=0)


def test_folder_max_rows_caps_reads(data_folder: Path) -> None:
    source = running(TabularFolderSource(), folder=str(data_folder), max_rows=1)
    result = source.read("train.csv", limit=50)
    assert (result["row_count"], result["truncated"]) == (1, True)
    assert source.read("events.parquet", limit=50)["row_count"] == 1


def test_folder_read_parquet(folder_source: TabularFolderSource) -> None:
    result = folder_source.read("events.parquet")
    assert result["columns"] == ["id", "value", "label", "at"]
    assert result["rows"] == [
        [1, 1.0, "x", "2024-01-02T03:04:05"],
        [2, None, None, "2024-01-02T03:04:05"],  # NaN has no JSON form: null
        [3, None, "z", "2024-01-02T03:04:05"],
    ]
    assert result["truncated"] is False
    json.dumps(result, allow_nan=False)
    limited = folder_source.read("events.parquet", limit=2)
    assert (limited["row_count"], limited["truncated"]) == (2, True)


def test_folder_schema(folder_source: TabularFolderSource) -> None:
    csv_schema = folder_source.schema("train.csv")
    assert csv_schema["format"] == "csv"
    assert csv_schema["columns"] == [
        {"name": "id", "type": "integer", "nullable": False},
        {"name": "name", "type": "string", "nullable": False},
        {"name": "score", "type": "number", "nullable": True},
        {"name": "flag", "type": "boolean", "nullable": False},
        {"name": "code", "type": "string", "nullable": True},
    ]
    parquet_schema = folder_source.schema("events.parquet")
    assert parquet_schema["format"] == "parquet"
    assert [(c["name"], c["type"]) for c in parquet_schema["columns"]] == [
        ("id", "integer"),
        ("value", "number"),
        ("label", "string"),
        ("at", "timestamp"),
    ]


def test_folder_refuses_names_outside(
    folder_source: TabularFolderSource, data_folder: Path, tmp_path: Path
) -> None:
    for name in ("../secret.csv", str(tmp_path / "secret.csv"), "nested/../../secret.csv"):
        with pytest.raises(PluginError, match="outside the folder"):
            folder_source.read(name)
        with pytest.raises(PluginError, match="outside the folder"):
            folder_source.schema(name)
    with pytest.raises(PluginError, match="no dataset named"):
        folder_source.read("notes.txt")
    with pytest.raises(PluginError, match="no dataset named"):
        folder_source.read("missing.csv")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_folder_ignores_symlinks_leading_outside(
    folder_source: TabularFolderSource, data_folder: Path, tmp_path: Path
) -> None:
    (data_folder / "link.csv").symlink_to(tmp_path / "secret.csv")
    assert "link.csv" not in [d["name"] for d in folder_source.list_datasets()]
    with pytest.raises(PluginError, match="outside the folder"):
        folder_source.read("link.csv")


def test_folder_other_delimiter_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "tabs.csv").write_text("a\tb\n1\tx\n2\n")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2,3\n")
    source = running(TabularFolderSource(), folder=str(tmp_path), csv_delimiter="\t")
    assert source.read("tabs.csv")["rows"] == [[1, "x"], [2, ""]]

    commas = running(TabularFolderSource(), folder=str(tmp_path))
    with pytest.raises(PluginError, match="line 2 has 3 fields"):
        commas.read("ragged.csv")
    with pytest.raises(PluginError, match="csv_delimiter"):
        TabularFolderSource().configure({"folder": str(tmp_path), "csv_delimiter": ":"})


def test_folder_unreadable_parquet(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    source = running(TabularFolderSource(), folder=str(tmp_path))
    with pytest.raises(PluginError, match="cannot read broken.parquet as Parquet"):
        source.read("broken.parquet")


def test_folder_parquet_without_pyarrow(
    folder_source: TabularFolderSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail, as it does where pyarrow is not installed.
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(PluginError, match=r'pip install "mlx-platform\[parquet\]"'):
        folder_source.read("events.parquet")
    assert folder_source.read("train.csv")["row_count"] == 3


def test_folder_health_and_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(PluginError, match="folder not found"):
        running(TabularFolderSource(), folder=str(missing))
    missing.mkdir()
    source = running(TabularFolderSource(), folder=str(missing))
    assert source.health_check()["status"] == "healthy"
    missing.rmdir()
    health = source.health_check()
    assert health["status"] == "unhealthy" and "not found" in health["message"]


# ---------------------------------------------------------------- LocalTracker

KEY = "k3y-that-must-never-leak"


@pytest.fixture()
def tracker(tmp_path: Path) -> Iterator[LocalTracker]:
    plugin = LocalTracker()
    running(plugin, root=str(tmp_path / "runs"))
    yield plugin
    plugin.stop()


@pytest.fixture()
def signed_tracker(tmp_path: Path) -> Iterator[LocalTracker]:
    plugin = LocalTracker()
    running(plugin, root=str(tmp_path / "runs"), signing_key=KEY, experiment="exp-1")
    yield plugin
    plugin.stop()


def test_tracker_run_lifecycle(tracker: LocalTracker, tmp_path: Path) -> None:
    assert (tmp_path / "runs").is_dir()  # created on start
    run = tracker.create_run(name="baseline", params={"lr": 0.1}, tags={"team": "ml"})
    run_id = run["run_id"]
    assert run["status"] == "running" and run["verified"] is None
    path = tmp_path / "runs" / "default" / f"{run_id}.json"
    assert json.loads(path.read_text())["name"] == "baseline"

    assert tracker.log_params(run_id, {"epochs": 3})["params"] == {"lr": 0.1, "epochs": 3}
    tracker.log_metrics(run_id, {"loss": 0.9, "acc": 0.5})
    tracker.log_metrics(run_id, {"loss": 0.7})
    logged = tracker.log_metrics(run_id, {"loss": 0.4}, step=10)
    assert logged["metrics"]["loss"]["step"] == 10
    ended = tracker.end_run(run_id)
    assert ended["status"] == "finished" and ended["end_time"]

    full = tracker.get_run(run_id)
    assert full["params"] == {"lr": 0.1, "epochs": 3}
    assert full["tags"] == {"team": "ml"}
    assert [(m["step"], m["value"]) for m in full["metrics"]["loss"]] == [
        (0, 0.9),
        (1, 0.7),
        (10, 0.4),
    ]
    assert full["status"] == "finished" and "signature" not in full
    json.dumps(full)

    with pytest.raises(PluginError, match="already ended"):
        tracker.end_run(run_id)
    with pytest.raises(PluginError, match="status must be one of"):
        tracker.end_run(tracker.create_run()["run_id"], status="weird")
    # Writes are atomic: no temporary file is left behind.
    assert sorted(p.suffix for p in path.parent.iterdir()) == [".json", ".json"]


def test_tracker_list_runs(tracker: LocalTracker, tmp_path: Path) -> None:
    first = tracker.create_run(name="one")["run_id"]
    second = tracker.create_run(name="two")["run_id"]
    tracker.log_metrics(first, {"loss": 1.0})
    tracker.log_metrics(first, {"loss": 0.5})
    tracker.end_run(second, status="failed")
    runs = {r["run_id"]: r for r in tracker.list_runs()}
    assert set(runs) == {first, second}
    assert runs[first]["metrics"] == {"loss": 0.5}
    assert runs[second]["status"] == "failed" and runs[second]["name"] == "two"
    assert tracker.list_runs("other") == []
    with pytest.raises(PluginError, match="experiment must be"):
        tracker.list_runs("../default")

    (tmp_path / "runs" / "default" / ("f" * 32 + ".json")).write_text("{not json")
    unreadable = [r for r in tracker.list_runs() if r["status"] == "unreadable"]
    assert [r["run_id"] for r in unreadable] == ["f" * 32]

    # A run created under another experiment is still found by id.
    tracker.configure({"root": str(tmp_path / "runs"), "experiment": "second"})
    assert tracker.get_run(first)["experiment"] == "default"
    assert tracker.list_runs() == []


def test_tracker_unknown_or_hostile_run_ids(tracker: LocalTracker) -> None:
    for run_id in ("0" * 32, "../../etc/passwd", "", "A" * 32):
        with pytest.raises(PluginError, match="unknown run"):
            tracker.get_run(run_id)
        with pytest.raises(PluginError, match="unknown run"):
            tracker.log_metrics(run_id, {"loss": 1.0})


def test_tracker_validates_values(tracker: LocalTracker) -> None:
    run_id = tracker.create_run()["run_id"]
    with pytest.raises(PluginError, match="finite"):
        tracker.log_metrics(run_id, {"loss": math.nan})
    with pytest.raises(PluginError, match="must be a number"):
        tracker.log_metrics(run_id, {"loss": "low"})  # type: ignore[dict-item]
    with pytest.raises(PluginError, match="must be a number"):
        tracker.log_metrics(run_id, {"loss": True})
    with pytest.raises(PluginError, match="step"):
        tracker.log_metrics(run_id, {"loss": 1.0}, step=1.5)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="JSON"):
        tracker.log_params(run_id, {"when": datetime.now()})
    with pytest.raises(PluginError, match="string keys"):
        tracker.create_run(params={1: "x"})  # type: ignore[dict-item]
    assert tracker.get_run(run_id)["metrics"] == {}


def test_tracker_signed_runs_verify(signed_tracker: LocalTracker, tmp_path: Path) -> None:
    run = signed_tracker.create_run(params={"lr": 0.1})
    run_id = run["run_id"]
    assert run["verified"] is True and run["experiment"] == "exp-1"
    signed_tracker.log_metrics(run_id, {"loss": 0.3})
    signed_tracker.end_run(run_id)
    full = signed_tracker.get_run(run_id)
    assert full["verified"] is True and "signature" not in full
    stored = json.loads((tmp_path / "runs" / "exp-1" / f"{run_id}.json").read_text())
    assert len(stored["signature"]) == 64
    assert signed_tracker.list_runs()[0]["verified"] is True


def test_tracker_detects_tampering(signed_tracker: LocalTracker, tmp_path: Path) -> None:
    run_id = signed_tracker.create_run()["run_id"]
    signed_tracker.log_metrics(run_id, {"acc": 0.6})
    path = tmp_path / "runs" / "exp-1" / f"{run_id}.json"
    record = json.loads(path.read_text())
    record["metrics"]["acc"][0]["value"] = 0.99
    path.write_text(json.dumps(record))

    tampered = signed_tracker.get_run(run_id)
    assert tampered["verified"] is False
    assert tampered["metrics"]["acc"][0]["value"] == 0.99
    assert signed_tracker.list_runs()[0]["verified"] is False
    with pytest.raises(PluginError, match="signature check") as info:
        signed_tracker.log_metrics(run_id, {"acc": 0.7})
    assert KEY not in str(info.value)
    # Refused, not re-signed: the record stays as the tamperer left it.
    assert signed_tracker.get_run(run_id)["verified"] is False


def test_tracker_signed_record_copied_to_another_run(
    signed_tracker: LocalTracker, tmp_path: Path
) -> None:
    run_id = signed_tracker.create_run()["run_id"]
    folder = tmp_path / "runs" / "exp-1"
    forged = "e" * 32
    (folder / f"{forged}.json").write_bytes((folder / f"{run_id}.json").read_bytes())
    assert signed_tracker.get_run(forged)["verified"] is False


def test_tracker_other_key_or_no_key(signed_tracker: LocalTracker, tmp_path: Path) -> None:
    run_id = signed_tracker.create_run()["run_id"]
    other = running(
        LocalTracker(), root=str(tmp_path / "runs"), signing_key="other", experiment="exp-1"
    )
    assert other.get_run(run_id)["verified"] is False
    unsigned = running(LocalTracker(), root=str(tmp_path / "runs"), experiment="exp-1")
    assert unsigned.get_run(run_id)["verified"] is None


def test_tracker_never_reveals_the_key(signed_tracker: LocalTracker, tmp_path: Path) -> None:
    outputs: list[Any] = []
    run = signed_tracker.create_run(name="n", params={"a": 1})
    outputs.append(run)
    outputs.append(signed_tracker.log_params(run["run_id"], {"b": 2}))
    outputs.append(signed_tracker.log_metrics(run["run_id"], {"m": 1.0}))
    outputs.append(signed_tracker.end_run(run["run_id"]))
    outputs.append(signed_tracker.get_run(run["run_id"]))
    outputs.append(signed_tracker.list_runs())
    outputs.append(signed_tracker.health_check())
    errors = []
    calls: list[Callable[[], object]] = [
        lambda: signed_tracker.get_run("nope"),
        lambda: signed_tracker.end_run(run["run_id"]),
        lambda: signed_tracker.log_metrics(run["run_id"], {"m": math.inf}),
    ]
    for call in calls:
        with pytest.raises(PluginError) as info:
            call()
        errors.append(str(info.value))
    assert KEY not in json.dumps(outputs) + " ".join(errors)
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text()


def test_tracker_concurrent_logging(signed_tracker: LocalTracker) -> None:
    run_id = signed_tracker.create_run()["run_id"]
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(10):
            signed_tracker.log_metrics(run_id, {"loss": float(worker * 100 + i)})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    history = signed_tracker.get_run(run_id)["metrics"]["loss"]
    assert len(history) == 80
    assert [h["step"] for h in history] == list(range(80))
    assert signed_tracker.get_run(run_id)["verified"] is True


def test_tracker_configuration_and_health(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="root"):
        LocalTracker().configure({"root": ""})
    with pytest.raises(PluginError, match="experiment must be"):
        LocalTracker().configure({"root": str(tmp_path), "experiment": "../escape"})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PluginError, match="cannot create the root folder"):
        running(LocalTracker(), root=str(blocker / "runs"))

    tracker = running(LocalTracker(), root=str(tmp_path / "runs"))
    health = tracker.health_check()
    assert health["status"] == "healthy" and "unsigned" in health["message"]
    (tmp_path / "runs").rmdir()
    assert tracker.health_check()["status"] == "unhealthy"
