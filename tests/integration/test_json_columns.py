"""JSON columns read back exactly as written (storage/db.py `_json_loads`): orjson reads
them, except what only the standard library reads as written (integers beyond 64 bits, which
orjson would turn into floats; NaN and Infinity, which `json.dumps` writes). On a real
SQLite file and a real PostgreSQL database (the driver hands the text over as bytes there)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

from mlx_platform.storage import Database
from tests.conftest import postgres_url_for

DOCUMENTS = [
    {"int": 123456789012345678901234567890, "neg": -9223372036854775809},
    {"edge": 18446744073709551615, "small": 2**63 - 1, "list": [1, 2.5, "x"]},
    {"float": 0.1, "exp": 1e300, "digits": "1234567890123456789012 in a string"},
    {"nested": {"a": [{"b": None, "c": True}]}, "unicode": "prévu ✓"},
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_json_documents_read_back_as_written(dialect: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'json.db'}"
        if dialect == "sqlite"
        else postgres_url_for(tmp_path / "json-home", 0)
    )
    db = Database(url)
    try:
        table = Table(
            "json_docs", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON)
        )
        table.create(db.engine)
        # NaN and Infinity: json.dumps writes them, SQLite keeps the text, PostgreSQL's json
        # type refuses it
        special: dict[str, float] = {"big": 10**30}
        if dialect == "sqlite":
            special.update(nan=float("nan"), inf=float("inf"))
        with db.engine.begin() as conn:
            conn.execute(insert(table), [{"id": i, "doc": d} for i, d in enumerate(DOCUMENTS)])
            conn.execute(insert(table), [{"id": 99, "doc": special}])
        with db.engine.connect() as conn:
            got = dict(conn.execute(select(table.c.id, table.c.doc)).tuples().all())
    finally:
        db.dispose()
    for i, doc in enumerate(DOCUMENTS):
        assert got[i] == doc
    assert type(got[0]["int"]) is int and type(got[0]["neg"]) is int
    if dialect == "sqlite":
        assert math.isnan(got[99]["nan"]) and got[99]["inf"] == math.inf
    assert got[99]["big"] == 10**30 and type(got[99]["big"]) is int
