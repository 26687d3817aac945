"""Alembic environment: the connection comes from `Database.migrate`, or the URL from settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from mlx_platform.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from mlx_platform.settings import Settings

        url = Settings().effective_database_url
    engine = create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
