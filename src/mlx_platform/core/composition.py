"""POST /v1/plugins/validate-composition in the service: the registry index read from the
database (cached), and the composition engine's ``evaluate`` over it (the rules and the
answer's decisions are in ``mlx_platform.composition.evaluate``).

Speed: the registry is read into an in-memory index (parsed metadata, who mentions whom),
reused while a cheap marker (row count, latest ``updated_at``/``created_at``) is unchanged;
every write to a plugin row moves the marker.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import func, select

from mlx_platform.composition import rules
from mlx_platform.composition.evaluate import evaluate
from mlx_platform.composition.model import RegistryIndex, build_index
from mlx_platform.core.context import Core
from mlx_platform.storage import Database, PluginRow
from mlx_platform.wire import CompositionEntry, CompositionResult

# ---------------------------------------------------------------- the registry index

_COLUMNS = (
    PluginRow.id,
    PluginRow.name,
    PluginRow.version,
    PluginRow.type,
    PluginRow.status,
    PluginRow.loadable,
    PluginRow.status_reason,
    PluginRow.plugin_metadata,
)
_indexes: weakref.WeakKeyDictionary[Database, RegistryIndex] = weakref.WeakKeyDictionary()
_index_lock = threading.Lock()


def _marker(session: Any) -> tuple[Any, ...]:
    stmt = select(func.count(), func.max(PluginRow.updated_at), func.max(PluginRow.created_at))
    return tuple(session.execute(stmt).one())


def registry_index(db: Database) -> RegistryIndex:
    """The index of `db`'s registry, rebuilt when the change marker moved.

    The marker is read before the rows, so a write landing between the two makes the next
    call rebuild again (never serve older data under a newer marker). Every write to a plugin
    row sets its ``updated_at`` (and an insert its ``created_at``; a delete lowers the count).
    Replicas sharing one database with clocks far apart could write an ``updated_at`` older
    than the current maximum; the count and ``created_at`` still catch registrations and
    deletions, and such a status change only affects the ``resources_in_use`` warning.
    """
    with db.read() as session:
        marker = _marker(session)
        current = _indexes.get(db)
        if current is not None and current.marker == marker:
            return current
        with _index_lock:
            current = _indexes.get(db)
            if current is not None and current.marker == marker:
                return current
            rows = session.execute(select(*_COLUMNS)).all()
            index = build_index(
                (
                    rules.facts_from(
                        id=id_,
                        name=name,
                        version=version,
                        type=type_,
                        meta=meta,
                        status=status,
                        loadable=bool(loadable),
                        status_reason=reason,
                    )
                    for id_, name, version, type_, status, loadable, reason, meta in rows
                ),
                marker,
            )
            _indexes[db] = index
            return index


# ---------------------------------------------------------------- entry point


def validate_composition(core: Core, entries: list[CompositionEntry]) -> CompositionResult:
    """The composition engine's answer over the registry, as the wire model (validated once,
    here: the route hands it on as it is)."""
    answer = evaluate(
        registry_index(core.db),
        [(e.name, e.version) for e in entries],
        singleton_types=core.settings.singleton_type_set,
        capacity=core.capacity(),
    )
    return CompositionResult.model_validate(answer)
