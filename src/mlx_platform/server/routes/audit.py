"""`/v1/audit`: the trail of state changes; and the `Origin` routes hand to core."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query

from mlx_platform.core import audit
from mlx_platform.errors import ValidationError
from mlx_platform.server import views
from mlx_platform.server.auth import Principal
from mlx_platform.server.deps import Admin, CoreDep
from mlx_platform.server.openapi import errors_for
from mlx_platform.server.request_context import current_request_id
from mlx_platform.server.routing import api_router
from mlx_platform.wire import AuditEvent, PageEnvelope

router = api_router("/v1/audit", "audit")


def origin_of(principal: Principal) -> audit.Origin:
    """Who is asking (the token's subject) and through which request, for the audit trail."""
    return audit.Origin(principal.subject, current_request_id())


@router.get(
    "",
    operation_id="audit_list",
    response_model=PageEnvelope[AuditEvent],
    summary="The audit trail",
    description="Scope: `plugins:admin`. Every state change (register, activate, deactivate, "
    "configure, delete, auto_register), refused ones included, newest first: who (the token's "
    "subject), what, when, the request id and the outcome (`success`, or `failure` with the "
    "error code). Never a secret: configuration changes list field names, not values. Filters "
    "combine; `since` and `until` are ISO 8601 times.",
    responses=errors_for(ValidationError),
)
def list_audit(
    core: CoreDep,
    _p: Admin,
    plugin_id: Annotated[str | None, Query(max_length=160)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[
        Literal["register", "activate", "deactivate", "configure", "delete", "auto_register"]
        | None,
        Query(),
    ] = None,
    outcome: Annotated[Literal["success", "failure"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> PageEnvelope[AuditEvent]:
    flt = audit.AuditFilter(
        plugin_id=plugin_id, actor=actor, action=action, outcome=outcome, since=since, until=until
    )
    found = audit.list_events(core, flt, page=page, limit=limit)
    return PageEnvelope[AuditEvent](data=found.items, pagination=views.pagination(found))
