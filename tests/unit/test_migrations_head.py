"""`Database.migrate` tells a schema already at the newest migration without Alembic
(storage/db.py `head_revision`, issue 13: a start does not import Alembic and load every
migration script to find nothing to do). Real SQLite files, fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from mlx_platform.storage.db import _MIGRATIONS, head_revision


def test_the_head_is_the_one_alembic_reads_from_the_scripts() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    assert script.get_heads() == [head_revision()]
    # one line of history, each numbered file the revision after the one before
    revisions = sorted(p.name[:4] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py"))
    for before, after in zip(revisions, revisions[1:], strict=False):
        assert script.get_revision(after).down_revision == before


def _migrate_in_a_fresh_interpreter(url: str) -> bool:
    """Runs `Database(url).migrate()` in a new process; whether it imported Alembic."""
    code = (
        "import sys; from mlx_platform.storage.db import Database; "
        f"Database({url!r}).migrate(); print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip().splitlines()[-1] == "True"


def test_a_schema_at_head_is_left_without_alembic_and_one_behind_is_migrated(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert _migrate_in_a_fresh_interpreter(url)  # a new database: Alembic builds it
    assert not _migrate_in_a_fresh_interpreter(url)  # at head: nothing imported, nothing done

    # a schema behind the head (as after an upgrade of the package) is migrated
    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    engine = create_engine(behind)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.commit()
    assert _migrate_in_a_fresh_interpreter(behind)
    with engine.connect() as conn:
        held = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert held == head_revision()
