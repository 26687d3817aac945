"""The audit trail: every state change (register, activate, deactivate, configure, delete,
auto-registration), who asked for it, when, through which request, and how it ended.

Recorded after the change, in a transaction of its own, for refusals as well as successes
(a refused activation is worth knowing about). Never a secret: configuration changes are
recorded by the names of the fields, never their values. Dry runs change nothing and are not
recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select

from mlx_platform.core.paging import Page
from mlx_platform.errors import MLXError
from mlx_platform.storage import AuditEventRow
from mlx_platform.storage.availability import classify, reason_of
from mlx_platform.wire import AuditEvent

if TYPE_CHECKING:
    from mlx_platform.core.context import Core

log = logging.getLogger("mlx_platform.audit")

ACTIONS = ("register", "activate", "deactivate", "configure", "delete", "auto_register")


@dataclass(frozen=True)
class Origin:
    """Who asked, and through which request (the server passes it in)."""

    actor: str
    request_id: str | None = None


SERVICE = Origin("service")


@dataclass
class Event:
    """What the change adds to its record while it runs (plugin id once known, details)."""

    plugin_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(
    core: Core, origin: Origin | None, action: str, plugin_id: str | None, *, skip: bool = False
) -> Iterator[Event]:
    """Record `action` when the block ends: `success`, or `failure` with the error code.
    `skip` (a dry run): record nothing."""
    event = Event(plugin_id)
    try:
        yield event
    except MLXError as exc:
        if not skip:
            _write(core, origin, action, event, "failure", exc.code)
        raise
    except Exception:
        if not skip:
            _write(core, origin, action, event, "failure", "INTERNAL_ERROR")
        raise
    if not skip:
        _write(core, origin, action, event, "success", None)


def _write(
    core: Core,
    origin: Origin | None,
    action: str,
    event: Event,
    outcome: str,
    code: str | None,
) -> None:
    who = origin or SERVICE
    try:
        with core.db.transaction() as session:
            session.add(
                AuditEventRow(
                    actor=who.actor,
                    action=action,
                    plugin_id=event.plugin_id,
                    outcome=outcome,
                    error_code=code,
                    request_id=who.request_id,
                    node_id=core.node_id,
                    details=event.details,
                )
            )
    except Exception as exc:  # noqa: BLE001 - the change itself stands; say what was not kept
        # during an outage the storage layer has logged it once already: one short line here
        # (never SQLAlchemy's text, which carries the statement and its parameters)
        (log.info if classify(exc) else log.warning)(
            "audit record not written (%s %s by %s, %s): %s",
            action,
            event.plugin_id,
            who.actor,
            outcome,
            reason_of(exc),
        )


@dataclass(frozen=True)
class AuditFilter:
    plugin_id: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(core: Core, flt: AuditFilter, *, page: int, limit: int) -> Page[AuditEvent]:
    """One page of audit events, newest first."""
    stmt: Select[Any] = select(AuditEventRow)
    if flt.plugin_id:
        stmt = stmt.where(AuditEventRow.plugin_id == flt.plugin_id)
    if flt.actor:
        stmt = stmt.where(AuditEventRow.actor == flt.actor)
    if flt.action:
        stmt = stmt.where(AuditEventRow.action == flt.action)
    if flt.outcome:
        stmt = stmt.where(AuditEventRow.outcome == flt.outcome)
    if flt.since:
        stmt = stmt.where(AuditEventRow.at >= flt.since)
    if flt.until:
        stmt = stmt.where(AuditEventRow.at < flt.until)
    with core.db.read() as session:
        total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = session.scalars(
            stmt.order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc())
            .offset((page - 1) * limit)
            .limit(limit)
        ).all()
    items = [
        AuditEvent(
            id=r.id,
            at=r.at,
            actor=r.actor,
            action=r.action,
            plugin_id=r.plugin_id,
            outcome=r.outcome,
            error_code=r.error_code,
            request_id=r.request_id,
            node_id=r.node_id,
            details=r.details or {},
        )
        for r in rows
    ]
    return Page(items, page=page, limit=limit, total=total)
