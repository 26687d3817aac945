"""`/v1/nodes`: the replicas sharing the database, and what each runs."""

from __future__ import annotations

from mlx_platform.core import replica
from mlx_platform.server.deps import Admin, CoreDep
from mlx_platform.server.openapi import errors_for
from mlx_platform.server.routing import api_router
from mlx_platform.wire import Envelope, Node

router = api_router("/v1/nodes", "nodes")


@router.get(
    "",
    operation_id="nodes_list",
    response_model=Envelope[list[Node]],
    summary="List the service's replicas",
    description="Scope: `plugins:admin`. Every replica recorded on the shared database, oldest "
    "first: its heartbeat, capacity and the plugin instances it runs. `alive` is false for a "
    "replica whose heartbeat is older than MLX_NODE_DEAD_AFTER (its records are cleared at "
    "the next heartbeat of any replica).",
    responses=errors_for(),
)
def list_nodes(core: CoreDep, _p: Admin) -> Envelope[list[Node]]:
    return Envelope[list[Node]](data=replica.nodes(core))
