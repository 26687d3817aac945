"""Every SDK method, through `MLXClient` and `AsyncMLXClient`, against a live server: answers
as wire models, every error code as its class, connection failures, retries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlx_platform import MLXClient, MLXConfigurationError
from mlx_platform.async_client import AsyncMLXClient, AsyncPage
from mlx_platform.errors import (
    DependencyMissingError,
    ForbiddenError,
    InsufficientResourcesError,
    InvalidArgumentsError,
    InvalidConfigurationError,
    InvalidStateError,
    MLXConnectionError,
    MLXError,
    MLXTimeoutError,
    OperationNotFoundError,
    OperationTimeoutError,
    PluginAlreadyExistsError,
    PluginConflictError,
    PluginExecutionError,
    PluginHealthCheckFailedError,
    PluginNotFoundError,
    UnauthorizedError,
    ValidationError,
)
from mlx_platform.sdk import SyncPage
from mlx_platform.wire import (
    ActivateResult,
    AuditEvent,
    CompositionResult,
    ConfigurationUpdateResult,
    DeactivateResult,
    DeleteResult,
    DiscoveryResult,
    HealthReport,
    InvokeResult,
    MetricsReport,
    Node,
    PluginDetail,
    PluginSummary,
    RegisterPluginRequest,
    RegisterResult,
)
from tests.conftest import LiveServer, clean_env, free_port, mlx_cli, plugin_body, start_server

# the SDK against `mlx serve` over a socket (and servers started late, on purpose)
pytestmark = pytest.mark.process


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's MLX_PLUGIN_PATH: tests drop plugin folders in it to be discovered."""
    return tmp_path_factory.mktemp("plugin_path")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("sdk") / "home", MLX_PLUGIN_PATH=str(plugin_dir))
    yield srv
    srv.stop()


class AsyncBridge:
    """`AsyncPlugins`, `AsyncNodes` or `AsyncAudit` called from sync test code: each call runs on the test's
    event loop."""

    def __init__(self, resource: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._resource = resource
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._resource, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call


class Api:
    """Clients of one kind (sync or async) for one test, closed at its end."""

    def __init__(self, mode: str, server: LiveServer) -> None:
        self.mode = mode
        self.server = server
        self.loop = asyncio.new_event_loop() if mode == "async" else None
        self._closers: list[Callable[[], None]] = []
        self.plugins = self.client_plugins(server.token("plugins:admin"))
        self.nodes = self.client_nodes(server.token("plugins:admin"))
        self.audit = self.client_audit(server.token("plugins:admin"))

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(coro)

    def client_plugins(self, token: str, **options: Any) -> Any:
        return self._resource("plugins", token, **options)

    def client_nodes(self, token: str, **options: Any) -> Any:
        return self._resource("nodes", token, **options)

    def client_audit(self, token: str, **options: Any) -> Any:
        return self._resource("audit", token, **options)

    def _resource(self, name: str, token: str, **options: Any) -> Any:
        options.setdefault("base_url", self.server.url)
        if self.mode == "sync":
            client = MLXClient(api_token=token, **options)
            self._closers.append(client.close)
            return getattr(client, name)
        aclient = AsyncMLXClient(api_token=token, **options)
        self._closers.append(lambda: self.run(aclient.aclose()))
        assert self.loop is not None
        return AsyncBridge(getattr(aclient, name), self.loop)

    def walk(self, page: Any) -> list[Any]:
        """Every item of the listing, from `page` on, the way each client iterates."""
        if self.mode == "sync":
            assert isinstance(page, SyncPage)
            return list(page)
        assert isinstance(page, AsyncPage)

        async def collect() -> list[Any]:
            return [item async for item in page]

        return list(self.run(collect()))

    def next_page(self, page: Any) -> Any:
        return page.next_page() if self.mode == "sync" else self.run(page.next_page())

    def close(self) -> None:
        for close in self._closers:
            close()
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, server: LiveServer) -> Iterator[Api]:
    a = Api(request.param, server)
    yield a
    a.close()


def register(api: Api, name: str, **overrides: Any) -> str:
    # in the service's process unless a test asks for a worker: what the SDK sees is the same,
    # and no worker process is started for each test
    overrides.setdefault("isolation", "inprocess")
    result = api.plugins.register(plugin_body(name, **overrides))
    assert isinstance(result, RegisterResult) and result.status == "registered", result
    return str(result.id)


def active(api: Api, name: str, **overrides: Any) -> str:
    plugin_id = register(api, name, **overrides)
    assert api.plugins.activate(plugin_id).status == "active"
    return plugin_id


def assert_api_error(exc: MLXError, cls: type[MLXError], status: int) -> None:
    assert type(exc) is cls
    assert exc.code == cls.code
    assert exc.status_code == status
    assert exc.message and isinstance(exc.details, dict)
    assert exc.request_id and exc.request_id.startswith("req_")
    assert exc.request_id in str(exc)


# ---------------------------------------------------------------- every method


def test_list_filters_and_iterates_past_the_page(api: Api, unique_name: str) -> None:
    ids = [register(api, f"{unique_name}_{i}") for i in range(3)]
    page = api.plugins.list(search=unique_name, limit=2)
    assert [p.id for p in page.data] == ids[:2]
    assert all(isinstance(p, PluginSummary) for p in page.data)
    assert (page.pagination.page, page.pagination.total, page.pagination.has_next) == (1, 3, True)
    # Iterating the first page walks on to the last.
    assert [p.id for p in api.walk(page)] == ids
    second = api.next_page(page)
    assert [p.id for p in second.data] == ids[2:] and not second.has_next_page()
    assert api.next_page(second) is None
    assert [p.id for p in api.walk(second)] == ids[2:]
    assert api.plugins.list(search=unique_name, page=2, limit=2).data[0].id == ids[2]
    assert api.plugins.list(search=unique_name, status="active").data == []
    filtered = api.plugins.list(search=unique_name, type="data_source", status="registered")
    assert filtered.pagination.total == 3


def test_get_returns_the_detail_with_fields_the_model_does_not_declare(
    api: Api, unique_name: str
) -> None:
    plugin_id = register(
        api,
        unique_name,
        configuration_schema={"password": {"type": "string", "secret": True}},
        metadata={"capabilities": ["echo"]},
    )
    detail = api.plugins.get(plugin_id)
    assert isinstance(detail, PluginDetail)
    assert (detail.id, detail.name, detail.status) == (plugin_id, unique_name, "registered")
    assert detail.metadata["capabilities"] == ["echo"]
    assert detail.configuration_schema["password"]["secret"] is True
    # `operations` is not a field of PluginDetail: a newer server's field still arrives.
    assert "echo" in detail.operations  # type: ignore[attr-defined]


def test_register_takes_a_dict_a_request_model_or_keywords(api: Api, unique_name: str) -> None:
    from_dict = api.plugins.register(plugin_body(f"{unique_name}_dict"))
    from_model = api.plugins.register(
        RegisterPluginRequest(
            name=f"{unique_name}_model",
            type="data_source",
            version="1.0.0",
            class_path="mlx_test_plugins.EchoPlugin",
        )
    )
    from_keywords = api.plugins.register(
        name=f"{unique_name}_kw",
        type="data_source",
        version="2.0",
        class_path="mlx_test_plugins.EchoPlugin",
    )
    for result in (from_dict, from_model, from_keywords):
        assert isinstance(result, RegisterResult)
        assert result.status == "registered" and result.validation_results.class_loadable
    assert from_keywords.version == "2.0"
    assert api.plugins.get(from_model.id).name == f"{unique_name}_model"


def test_register_dry_run_stores_nothing(api: Api, unique_name: str) -> None:
    result = api.plugins.register(plugin_body(unique_name), dry_run=True)
    assert result.dry_run is True
    with pytest.raises(PluginNotFoundError):
        api.plugins.get(result.id)


def test_activate_takes_the_spec_body_or_keywords(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name)
    result = api.plugins.activate(plugin_id, {"configuration": {"region": "eu"}})
    assert isinstance(result, ActivateResult)
    assert result.status == "active" and result.started
    assert result.health_check is not None and result.health_check.status == "healthy"
    api.plugins.deactivate(plugin_id)
    later = api.plugins.activate(plugin_id, configuration={"pool": 3}, auto_start=False)
    assert later.started is False
    assert later.health_check is not None and later.health_check.status == "not_started"
    # The configuration is merged over the stored one.
    assert api.plugins.get(plugin_id).configuration == {"region": "eu", "pool": 3}


def test_activate_dry_run_changes_nothing(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name)
    assert api.plugins.activate(plugin_id, dry_run=True).dry_run is True
    assert api.plugins.get(plugin_id).status == "registered"


def test_deactivate_answers_inactive(api: Api, unique_name: str) -> None:
    first = active(api, f"{unique_name}_a")
    second = active(api, f"{unique_name}_b")
    result = api.plugins.deactivate(first)
    assert isinstance(result, DeactivateResult)
    assert (result.id, result.status, result.pending_operations) == (first, "inactive", 0)
    forced = api.plugins.deactivate(second, force=True, graceful_shutdown_timeout=1)
    assert forced.status == "inactive"
    assert api.plugins.get(second).status == "inactive"


def test_update_configuration_hot_and_with_restart(api: Api, unique_name: str) -> None:
    plugin_id = register(
        api,
        unique_name,
        configuration_schema={
            "pool_size": {"type": "integer", "default": 5},
            "region": {"type": "string", "default": "eu", "hot_reload": False},
        },
    )
    api.plugins.activate(plugin_id)
    hot = api.plugins.update_configuration(plugin_id, {"pool_size": 10})
    assert isinstance(hot, ConfigurationUpdateResult)
    assert hot.configuration_updated and hot.updated_fields == ["pool_size"]
    assert (hot.restart_required, hot.restarted) == (False, False)
    refused = api.plugins.update_configuration(plugin_id, {"region": "us"})
    assert refused.restart_required is True and refused.restarted is False
    restarted = api.plugins.update_configuration(plugin_id, {"region": "apac"}, True)
    assert restarted.restarted is True and restarted.updated_fields == ["region"]
    dry = api.plugins.update_configuration(plugin_id, {"pool_size": 20}, dry_run=True)
    assert dry.dry_run is True
    assert api.plugins.get(plugin_id).configuration["pool_size"] == 10


def test_health_check_reports_checks(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    health = api.plugins.health_check(plugin_id)
    assert isinstance(health, HealthReport)
    assert (health.plugin_id, health.status) == (plugin_id, "healthy")
    assert health.checks.connectivity.status == "pass"
    assert health.checks.dependencies.status == "pass"


def answering_node(server: LiveServer) -> str:
    """The replica named by the X-MLX-Node header of an answer."""
    with server.client(scopes=("plugins:read",)) as http:
        response = http.get("/v1/plugins", params={"limit": 1})
    assert response.status_code == 200, response.text
    return response.headers["x-mlx-node"]


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_nodes_list_names_the_answering_replica_and_what_it_runs(
    api: Api, unique_name: str
) -> None:
    plugin_id = active(api, unique_name, isolation="process")
    node_id = answering_node(api.server)

    nodes = api.nodes.list()
    assert isinstance(nodes, list) and [type(n) for n in nodes] == [Node]
    node = nodes[0]
    assert (node.id, node.alive, node.this_node) == (node_id, True, True)
    assert node.pid == api.server.process.pid
    assert node.started_at <= node.heartbeat_at
    instance = next(i for i in node.instances if i.plugin_id == plugin_id)
    assert instance.state == "running"
    assert instance.pid is not None and instance.pid != node.pid  # isolation "process"
    assert pid_is_alive(instance.pid)

    # The health report names the same replica, and its view of the plugin.
    health = api.plugins.health_check(plugin_id)
    assert health.node_id == node_id
    assert [(r.node_id, r.state, r.pid) for r in health.replicas] == [
        (node_id, "running", instance.pid)
    ]


@pytest.mark.parametrize("scope", ["plugins:read", "plugins:write"])
def test_nodes_need_the_admin_scope(api: Api, scope: str) -> None:
    nodes = api.client_nodes(api.server.token(scope))
    with pytest.raises(ForbiddenError) as info:
        nodes.list()
    assert_api_error(info.value, ForbiddenError, 403)


def test_invoke_returns_the_result(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    result = api.plugins.invoke(plugin_id, "add", {"a": 2, "b": 3})
    assert isinstance(result, InvokeResult)
    assert (result.plugin_id, result.operation, result.result) == (plugin_id, "add", 5)
    assert result.duration_ms >= 0
    echoed = api.plugins.invoke(plugin_id, "echo", {"value": {"x": [1, "two"]}}, timeout=10)
    assert echoed.result == {"x": [1, "two"]}


def test_invoke_waits_for_its_own_timeout_beyond_the_client_timeout(server: LiveServer) -> None:
    # The HTTP read would time out after 1 s; the operation may take 5, and takes 1.5.
    for mode in ("sync", "async"):
        api = Api(mode, server)
        try:
            plugin_id = active(api, f"invoke_long_{mode}")
            slow = api.client_plugins(server.token("plugins:admin"), timeout=1.0)
            assert slow.invoke(plugin_id, "sleep", {"seconds": 1.5}, timeout=5).result == 1.5
        finally:
            api.close()


def test_metrics_take_datetimes_or_strings(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    for n in range(3):
        api.plugins.invoke(plugin_id, "add", {"a": n, "b": 1})
    now = datetime.now(UTC)
    report = api.plugins.metrics(
        plugin_id,
        start_time=now - timedelta(minutes=10),
        end_time=now + timedelta(minutes=1),
        granularity="minute",
    )
    assert isinstance(report, MetricsReport)
    assert (report.plugin_id, report.granularity) == (plugin_id, "minute")
    assert report.metrics.execution_count == 3 and report.metrics.error_count == 0
    assert sum(point.execution_count for point in report.timeseries) == 3
    # A naive datetime is UTC; strings pass as they are.
    naive = api.plugins.metrics(
        plugin_id,
        start_time=(now - timedelta(hours=2)).replace(tzinfo=None),
        end_time=(now + timedelta(minutes=1)).isoformat(),
    )
    assert naive.metrics.execution_count == 3 and naive.granularity == "hour"
    assert api.plugins.metrics(plugin_id).metrics.execution_count == 3


def test_discover_finds_plugin_folders_and_registers_them(
    api: Api, unique_name: str, plugin_dir: Path
) -> None:
    folder = plugin_dir / unique_name
    folder.mkdir()
    (folder / "mlx-plugin.toml").write_text(
        f'name = "{unique_name}"\ntype = "data_source"\nversion = "1.0.0"\n'
        'class_path = "mlx_test_plugins.EchoPlugin"\n'
    )
    found = api.plugins.discover(sources=["filesystem"])
    assert isinstance(found, DiscoveryResult)
    mine = [p for p in found.discovered_plugins if p.name == unique_name]
    assert len(mine) == 1 and mine[0].source == "filesystem" and mine[0].compatible
    assert mine[0].plugin_id is None and not mine[0].auto_registered
    registered = api.plugins.discover(sources="filesystem", auto_register=True)
    mine = [p for p in registered.discovered_plugins if p.name == unique_name]
    assert mine[0].auto_registered and mine[0].plugin_id
    assert registered.discovery_summary.auto_registered >= 1
    assert api.plugins.get(mine[0].plugin_id).name == unique_name
    every_source = api.plugins.discover()
    assert any(p.name == unique_name for p in every_source.discovered_plugins)


def test_validate_composition_takes_names_and_versions(api: Api, unique_name: str) -> None:
    register(api, f"{unique_name}_a")
    register(api, f"{unique_name}_b", version="2.1.0")
    ok = api.plugins.validate_composition(
        [f"{unique_name}_a", {"name": f"{unique_name}_b", "version": ">=2"}]
    )
    assert isinstance(ok, CompositionResult)
    assert ok.composition_valid and ok.conflicts == []
    assert [(r["name"], r["version"]) for r in ok.resolved] == [
        (f"{unique_name}_a", "1.0.0"),
        (f"{unique_name}_b", "2.1.0"),
    ]
    bad = api.plugins.validate_composition([f"{unique_name}_a", f"{unique_name}_ghost"])
    assert not bad.composition_valid
    assert bad.conflicts[0].plugins == [f"{unique_name}_ghost"]


def test_delete_unregisters_and_force_deactivates(api: Api, unique_name: str) -> None:
    idle = register(api, f"{unique_name}_idle")
    result = api.plugins.delete(idle)
    assert isinstance(result, DeleteResult)
    assert (result.id, result.deleted, result.deactivated) == (idle, True, False)
    running = active(api, f"{unique_name}_running")
    with pytest.raises(InvalidStateError):
        api.plugins.delete(running)
    forced = api.plugins.delete(running, force=True)
    assert forced.deleted and forced.deactivated
    with pytest.raises(PluginNotFoundError):
        api.plugins.get(running)


def test_configuration_schema_is_json_schema(api: Api, unique_name: str) -> None:
    plugin_id = register(
        api,
        unique_name,
        configuration_schema={
            "dsn": {"type": "string", "required": True},
            "password": {"type": "string", "secret": True},
        },
    )
    schema = api.plugins.configuration_schema(plugin_id)
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert schema["required"] == ["dsn"]
    assert schema["properties"]["password"]["writeOnly"] is True


# ---------------------------------------------------------------- every error class


def test_plugin_not_found(api: Api) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        api.plugins.get("plugin_nothing_999")
    assert_api_error(info.value, PluginNotFoundError, 404)
    assert info.value.details == {"plugin_id": "plugin_nothing_999"}


def test_plugin_conflict(api: Api, unique_name: str) -> None:
    first = active(api, f"{unique_name}_first")
    second = register(
        api, f"{unique_name}_second", metadata={"conflicts_with": [f"{unique_name}_first"]}
    )
    with pytest.raises(PluginConflictError) as info:
        api.plugins.activate(second)
    assert_api_error(info.value, PluginConflictError, 409)
    assert info.value.details["conflicting_plugin"] == f"{unique_name}_first"
    api.plugins.deactivate(first)


def test_invalid_configuration(api: Api, unique_name: str) -> None:
    plugin_id = register(
        api, unique_name, configuration_schema={"pool_size": {"type": "integer", "maximum": 5}}
    )
    with pytest.raises(InvalidConfigurationError) as info:
        api.plugins.activate(plugin_id, configuration={"pool_size": 50})
    assert_api_error(info.value, InvalidConfigurationError, 422)
    assert set(info.value.details) == {"pool_size"}


def test_plugin_health_check_failed(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name, class_path="mlx_test_plugins.UnhealthyPlugin")
    with pytest.raises(PluginHealthCheckFailedError) as info:
        api.plugins.activate(plugin_id)
    assert_api_error(info.value, PluginHealthCheckFailedError, 424)
    assert api.plugins.get(plugin_id).status == "registered"


def test_insufficient_resources(process_server_factory: Callable[..., LiveServer]) -> None:
    small = process_server_factory(capacity_memory_mb="100")
    for mode in ("sync", "async"):
        api = Api(mode, small)
        try:
            plugin_id = register(api, f"big_{mode}", metadata={"min_memory_mb": 512})
            with pytest.raises(InsufficientResourcesError) as info:
                api.plugins.activate(plugin_id)
            assert_api_error(info.value, InsufficientResourcesError, 409)
            assert info.value.details["shortfall"]["memory_mb"]["required"] == 512
        finally:
            api.close()


def test_dependency_missing(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name, metadata={"requires": [f"{unique_name}_dep>=1.0"]})
    with pytest.raises(DependencyMissingError) as info:
        api.plugins.activate(plugin_id)
    assert_api_error(info.value, DependencyMissingError, 409)
    assert info.value.details["missing_dependencies"][0]["name"] == f"{unique_name}_dep"


def test_plugin_already_exists(api: Api, unique_name: str) -> None:
    register(api, unique_name)
    with pytest.raises(PluginAlreadyExistsError) as info:
        api.plugins.register(plugin_body(unique_name))
    assert_api_error(info.value, PluginAlreadyExistsError, 409)


def test_invalid_state(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name)
    with pytest.raises(InvalidStateError) as info:
        api.plugins.deactivate(plugin_id)
    assert_api_error(info.value, InvalidStateError, 409)


def test_validation_error_names_the_parameter(api: Api, unique_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.plugins.list(limit=1000)
    assert_api_error(info.value, ValidationError, 422)
    assert set(info.value.details) == {"limit"}
    # A request body is sent as given: the service names the unknown field.
    with pytest.raises(ValidationError) as body_info:
        api.plugins.register(plugin_body(unique_name, colour="blue"))
    assert "colour" in body_info.value.details


def test_unauthorized(api: Api) -> None:
    plugins = api.client_plugins("not-a-token")
    with pytest.raises(UnauthorizedError) as info:
        plugins.list()
    assert_api_error(info.value, UnauthorizedError, 401)


def test_forbidden(api: Api, unique_name: str) -> None:
    reader = api.client_plugins(api.server.token("plugins:read"))
    assert reader.list(limit=1).pagination.total >= 1
    with pytest.raises(ForbiddenError) as info:
        reader.register(plugin_body(unique_name))
    assert_api_error(info.value, ForbiddenError, 403)


def test_operation_not_found(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    with pytest.raises(OperationNotFoundError) as info:
        api.plugins.invoke(plugin_id, "not_an_operation")
    assert_api_error(info.value, OperationNotFoundError, 404)


def test_invalid_arguments(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    with pytest.raises(InvalidArgumentsError) as info:
        api.plugins.invoke(plugin_id, "add", {"a": 1})
    assert_api_error(info.value, InvalidArgumentsError, 422)


def test_operation_timeout(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    with pytest.raises(OperationTimeoutError) as info:
        api.plugins.invoke(plugin_id, "sleep", {"seconds": 5}, timeout=0.5)
    assert_api_error(info.value, OperationTimeoutError, 504)


def test_plugin_execution_error(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    with pytest.raises(PluginExecutionError) as info:
        api.plugins.invoke(plugin_id, "fail", {"message": "the warehouse is closed"})
    assert_api_error(info.value, PluginExecutionError, 424)
    assert "the warehouse is closed" in info.value.message


def test_client_timeout_raises_timeout_error(api: Api, unique_name: str) -> None:
    plugin_id = active(api, unique_name)
    impatient = api.client_plugins(api.server.token("plugins:admin"), timeout=0.5)
    with pytest.raises(MLXTimeoutError) as info:
        impatient.invoke(plugin_id, "sleep", {"seconds": 2})
    assert isinstance(info.value, MLXConnectionError) and isinstance(info.value, MLXError)
    assert info.value.status_code is None  # nothing was answered
    assert info.value.url == f"{api.server.url}/v1/plugins/{plugin_id}/invoke"


# ---------------------------------------------------------------- connections and retries


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def counting_client(mode: str, attempts: list[float]) -> httpx.Client | httpx.AsyncClient:
    """An httpx client noting the time of every attempt (hooks run before sending)."""
    if mode == "sync":
        return httpx.Client(event_hooks={"request": [lambda _r: attempts.append(time.monotonic())]})

    async def note(_request: httpx.Request) -> None:
        attempts.append(time.monotonic())

    return httpx.AsyncClient(event_hooks={"request": [note]})


def test_refused_connection_is_a_connection_error(api: Api) -> None:
    url = closed_port_url()
    plugins = api.client_plugins("token", base_url=url, max_retries=0)
    with pytest.raises(MLXConnectionError) as info:
        plugins.list()
    assert isinstance(info.value, MLXError) and not isinstance(info.value, MLXTimeoutError)
    assert info.value.url == f"{url}/v1/plugins"
    assert "could not connect" in info.value.message


def test_only_idempotent_calls_are_retried_after_a_refused_connection(api: Api) -> None:
    attempts: list[float] = []
    http = counting_client(api.mode, attempts)
    plugins = api.client_plugins(
        "token", base_url=closed_port_url(), max_retries=3, retry_delay=0.05, http_client=http
    )
    with pytest.raises(MLXConnectionError) as info:
        plugins.health_check("plugin_x_001")
    assert len(attempts) == 4 and "after 4 attempts" in info.value.message
    # Backoff: each wait is at least 75% of 0.05 * 2**n.
    waits = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(w >= 0.75 * 0.05 * 2**n for n, w in enumerate(waits)), waits
    attempts.clear()
    with pytest.raises(MLXConnectionError):
        plugins.activate("plugin_x_001")
    assert len(attempts) == 1
    if api.mode == "sync":
        assert isinstance(http, httpx.Client)
        http.close()
    else:
        assert isinstance(http, httpx.AsyncClient)
        api.run(http.aclose())


class LateServer:
    """`mlx serve` on a chosen port, started from a thread `delay` seconds from now."""

    def __init__(self, port: int, home: Path, delay: float) -> None:
        self.port, self.home, self.delay = port, home, delay
        self.started_at: float | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        time.sleep(self.delay)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlx_platform.cli.main", "serve", "--port", str(self.port)],
            env=clean_env(MLX_HOME=str(self.home)),
            stdout=subprocess.DEVNULL,
            stderr=(self.home.parent / "late-server.log").open("wb"),
        )

    def stop(self) -> None:
        self.thread.join()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retry_reaches_a_server_that_started_after_the_first_attempt(
    mode: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # The token is signed with a secret made in MLX_HOME, that the server will find there.
    token = mlx_cli(
        "token", "create", "--subject", "t", "--scope", "plugins:read", "--new-secret",
        env=clean_env(MLX_HOME=str(home)),
    ).stdout.strip()  # fmt: skip
    attempts: list[float] = []
    http = counting_client(mode, attempts)
    port = free_port()
    options: dict[str, Any] = {
        "api_token": token,
        "base_url": f"http://127.0.0.1:{port}",
        # enough tries for a loaded machine, where the late server may take 30 s to answer
        "max_retries": 30,
        "retry_delay": 0.25,
        "max_retry_delay": 2.0,
        "http_client": http,
    }
    late = LateServer(port, home, delay=1.0)
    try:
        if mode == "sync":
            assert isinstance(http, httpx.Client)
            with MLXClient(**options) as client:
                total = client.plugins.list().pagination.total
            http.close()
        else:
            assert isinstance(http, httpx.AsyncClient)

            async def call() -> int:
                async with AsyncMLXClient(**options) as client:
                    page = await client.plugins.list()
                await http.aclose()
                return page.pagination.total

            total = asyncio.run(call())
    finally:
        late.stop()
    assert total == 3  # the example plugins of a fresh server
    assert late.started_at is not None and attempts[0] < late.started_at
    assert len(attempts) >= 2


# ---------------------------------------------------------------- construction and lifetime


@pytest.mark.parametrize("client_class", [MLXClient, AsyncMLXClient])
def test_missing_token_fails_at_construction(
    client_class: type[MLXClient] | type[AsyncMLXClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLX_API_TOKEN", raising=False)
    with pytest.raises(MLXConfigurationError, match="MLX_API_TOKEN"):
        client_class()
    with pytest.raises(ValueError):
        client_class(api_token="")


@pytest.mark.parametrize("client_class", [MLXClient, AsyncMLXClient])
def test_bad_base_url_fails_at_construction(
    client_class: type[MLXClient] | type[AsyncMLXClient],
) -> None:
    for url in ("127.0.0.1:8000", "ftp://example.org", "http://"):
        with pytest.raises(MLXConfigurationError):
            client_class(api_token="t", base_url=url)


def test_url_and_token_come_from_the_environment(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLX_API_URL", server.url)
    monkeypatch.setenv("MLX_API_TOKEN", server.token("plugins:read"))
    with MLXClient() as client:
        assert client.base_url == f"{server.url}/v1"
        assert client.plugins.list().pagination.total >= 3

    async def call() -> int:
        async with AsyncMLXClient() as aclient:
            return (await aclient.plugins.list()).pagination.total

    assert asyncio.run(call()) >= 3
    monkeypatch.delenv("MLX_API_URL")
    assert MLXClient().base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_may_end_in_v1(server: LiveServer, suffix: str) -> None:
    token = server.token("plugins:read")
    with MLXClient(api_token=token, base_url=server.url + suffix) as client:
        assert client.base_url == f"{server.url}/v1"
        assert client.plugins.get("plugin_sqlite_source_001").name == "sqlite_source"


def test_with_blocks_close_the_connections(server: LiveServer) -> None:
    token = server.token("plugins:read")
    with MLXClient(api_token=token, base_url=server.url) as client:
        client.plugins.list()
        assert not client.is_closed
    assert client.is_closed

    async def use() -> AsyncMLXClient:
        async with AsyncMLXClient(api_token=token, base_url=server.url) as aclient:
            await aclient.plugins.list()
            assert not aclient.is_closed
        return aclient

    assert asyncio.run(use()).is_closed


def test_a_client_given_an_http_client_leaves_it_open(server: LiveServer) -> None:
    with httpx.Client() as http:
        with MLXClient(
            api_token=server.token("plugins:read"), base_url=server.url, http_client=http
        ) as client:
            client.plugins.list()
        assert not http.is_closed


def test_the_sdk_imports_nothing_of_the_server() -> None:
    # (rich may show up: httpx imports it for its own command line when it is installed.)
    code = (
        "import sys\n"
        "from mlx_platform import MLXClient\n"
        "from mlx_platform.async_client import AsyncMLXClient\n"
        "MLXClient(api_token='t')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'uvicorn',"
        " 'typer') or m.startswith(('mlx_platform.server', 'mlx_platform.core',"
        " 'mlx_platform.storage', 'mlx_platform.runtime', 'mlx_platform.cli'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_the_package_ships_py_typed() -> None:
    assert resources.files("mlx_platform").joinpath("py.typed").is_file()


# ---------------------------------------------------------------- audit


def test_audit_list_shows_each_change_with_who_made_it_and_how_it_ended(
    api: Api, unique_name: str
) -> None:
    plugin_id = register(api, unique_name, configuration_schema={"size": {"type": "integer"}})
    with pytest.raises(InvalidConfigurationError) as refused:
        api.plugins.activate(plugin_id, configuration={"size": "big"})
    api.plugins.activate(plugin_id)
    api.plugins.deactivate(plugin_id)

    page = api.audit.list(plugin_id=plugin_id)
    assert isinstance(page, SyncPage if api.mode == "sync" else AsyncPage)
    assert all(type(e) is AuditEvent for e in page.data)
    assert [(e.action, e.outcome, e.error_code) for e in page.data] == [  # newest first
        ("deactivate", "success", None),
        ("activate", "success", None),
        ("activate", "failure", "INVALID_CONFIGURATION"),
        ("register", "success", None),
    ]
    assert {(e.actor, e.plugin_id) for e in page.data} == {("tester", plugin_id)}
    # The request id the SDK sent is the one recorded.
    assert page.data[2].request_id == refused.value.request_id
    assert all(e.request_id and e.request_id.startswith("req_") for e in page.data)
    assert all(e.node_id for e in page.data)
    assert page.data[2].details["configuration_fields"] == ["size"]
    assert (page.pagination.page, page.pagination.total, page.pagination.has_next) == (1, 4, False)

    # One event a page: iterating the first page walks on to the last.
    ids = [e.id for e in page.data]
    first = api.audit.list(plugin_id=plugin_id, limit=1)
    assert [e.id for e in first.data] == ids[:1] and first.has_next_page()
    assert [e.id for e in api.walk(first)] == ids
    assert [e.id for e in api.audit.list(plugin_id=plugin_id, page=2, limit=3).data] == ids[3:]


def test_audit_list_filters_pass_through(api: Api, unique_name: str) -> None:
    plugin_id = register(api, unique_name, configuration_schema={"size": {"type": "integer"}})
    with pytest.raises(InvalidConfigurationError) as refused:
        api.plugins.activate(plugin_id, configuration={"size": "big"})
    api.plugins.activate(plugin_id)
    # Someone else's change, under a subject no other test uses.
    other = api.client_plugins(api.server.token("plugins:write", subject=unique_name))
    other.deactivate(plugin_id)
    trail = api.audit.list(plugin_id=plugin_id).data
    assert [e.action for e in trail] == ["deactivate", "activate", "activate", "register"]

    def ids(**filters: Any) -> list[int]:
        return [e.id for e in api.audit.list(**filters).data]

    assert ids(plugin_id=plugin_id, action="activate") == [trail[1].id, trail[2].id]
    failed = api.audit.list(plugin_id=plugin_id, outcome="failure").data
    assert [(e.action, e.request_id) for e in failed] == [("activate", refused.value.request_id)]
    assert ids(actor=unique_name) == [trail[0].id]  # every plugin, one actor
    assert ids(plugin_id=plugin_id, actor="tester", outcome="success") == [
        trail[1].id,
        trail[3].id,
    ]
    # `since` is inclusive and `until` exclusive; datetimes (naive ones are UTC) or strings.
    newest, oldest = trail[0].at, trail[-1].at
    assert ids(plugin_id=plugin_id, since=newest) == [trail[0].id]
    assert ids(plugin_id=plugin_id, until=oldest) == []
    assert ids(plugin_id=plugin_id, since=oldest, until=newest) == [e.id for e in trail[1:]]
    naive = newest.astimezone(UTC).replace(tzinfo=None)
    assert ids(plugin_id=plugin_id, since=naive) == [trail[0].id]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(plugin_id=plugin_id, since=later) == []
    # What the service refuses is a ValidationError naming the field.
    for bad in ({"action": "explode"}, {"outcome": "maybe"}, {"limit": 101}, {"since": "soon"}):
        with pytest.raises(ValidationError) as info:
            api.audit.list(**bad)
        assert_api_error(info.value, ValidationError, 422)
        assert next(iter(bad)) in str(info.value.details) + info.value.message


@pytest.mark.parametrize("scope", ["plugins:read", "plugins:write"])
def test_audit_needs_the_admin_scope(api: Api, scope: str) -> None:
    audit = api.client_audit(api.server.token(scope))
    with pytest.raises(ForbiddenError) as info:
        audit.list()
    assert_api_error(info.value, ForbiddenError, 403)
