"""What the plugin list's tests share (test_list_at_scale.py, test_list_sort.py): a database
of their own on each backend, migrated to a revision, plugins bulk inserted as registration
stores them, creation times with ties, and the SQL an engine runs watched."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

from mlx_platform.storage import PluginRow
from mlx_platform.storage.db import _MIGRATIONS
from tests.conftest import POSTGRES_SERVER, _pg_admin_connect

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def empty_database(kind: str, tmp: Path) -> Iterator[str]:
    """An empty database of its own, not migrated: a SQLite file in `tmp`, or a PostgreSQL
    database created for it and dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'list.db'}"
        return
    name = f"mlxl_{uuid.uuid4().hex[:20]}"
    with _pg_admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with _pg_admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alembic(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    _alembic(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    _alembic(url, command.downgrade, revision)


@dataclass(frozen=True)
class Plugin:
    """A plugin as the list shows it (the columns it filters, orders and searches by)."""

    id: str
    name: str
    description: str
    type: str = "data_source"
    status: str = "registered"
    created_at: datetime = T0
    version: str = "1.0.0"
    category: str | None = None


def creation_times(n: int) -> Iterator[datetime]:
    """`n` creation times from T0 on, a second apart, but every fourth the same as the one
    before it (ties, which the list breaks by id)."""
    when = T0
    for i in range(n):
        if i % 4:
            when += timedelta(seconds=1)
        yield when


def row(p: Plugin) -> dict[str, Any]:
    """The plugins table's columns for `p`, as registration stores them."""
    return {
        "id": p.id,
        "name": p.name,
        "type": p.type,
        "version": p.version,
        "description": p.description,
        "category": p.category,
        "class_path": "mlx_test_plugins.SimplePlugin",
        "isolation": "process",
        "status": p.status,
        "loadable": True,
        "class_info": {},
        "configuration_schema": {},
        "metadata": {},
        "configuration": {},
        "running_configuration": {},
        "extra": {},
        "created_at": p.created_at,
        "updated_at": p.created_at,
    }


def insert(url: str, plugins: list[Plugin]) -> None:
    """`plugins` bulk inserted in one transaction, 2,000 a statement."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for i in range(0, len(plugins), 2000):
                conn.execute(PluginRow.__table__.insert(), [row(p) for p in plugins[i : i + 2000]])
    finally:
        engine.dispose()


def watch_statements(engine: Engine) -> list[str]:
    """The SQL `engine` runs from now on (a list, filled as it goes)."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen
