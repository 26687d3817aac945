"""`AsyncMLXClient`: the asynchronous client, on `httpx.AsyncClient`.

The same calls as `MLXClient`, built and read by the same code (`_base`, `_requests`);
only the sending and the waiting differ.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from mlx_platform.sdk import _requests
from mlx_platform.sdk._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_DELAY,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    APIRequest,
    BaseClient,
    default_tls_context,
    new_request_id,
)
from mlx_platform.sdk._pages import AsyncPage
from mlx_platform.wire import (
    ActivateRequest,
    ActivateResult,
    AuditEvent,
    CompositionEntry,
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
    PluginSort,
    PluginSummary,
    RegisterPluginRequest,
    RegisterResult,
)

R = TypeVar("R")


class AsyncMLXClient(BaseClient):
    """The mlx-platform API, asynchronously (asyncio or trio).

    ```python
    async with AsyncMLXClient(api_token="...") as client:
        async for plugin in await client.plugins.list(type="data_source"):
            print(plugin.id, plugin.status)
    ```

    Args:
        api_token: the bearer token; default: the `MLX_API_TOKEN` environment variable.
            Without either the constructor raises `MLXConfigurationError`.
        base_url: the service root, e.g. `http://127.0.0.1:8000` (a URL ending in `/v1`
            works too); default: `MLX_API_URL`, else `http://127.0.0.1:8000`.
        timeout: seconds, or an `httpx.Timeout`; default 60 s (5 s to connect); None waits
            forever. An `invoke` with its own `timeout` waits for that much longer.
        max_retries: further tries of an idempotent call (a GET) after a connection failure
            or a 429/503 answer; other calls are never retried.
        retry_delay, max_retry_delay: the wait before retry n is
            `min(retry_delay * 2**n, max_retry_delay)` less up to 25% of jitter, or the
            answer's `Retry-After` when it gives one (up to 60 s).
        http_client: an `httpx.AsyncClient` of your own (proxies, certificates...); it is not
            closed by `aclose()`.
        default_headers: extra headers sent with every request.
    """

    def __init__(
        self,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            api_token=api_token,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            default_headers=default_headers,
        )
        self._owns_http_client = http_client is None
        self._http = (
            http_client
            if http_client is not None
            else httpx.AsyncClient(verify=default_tls_context())
        )

    @cached_property
    def plugins(self) -> AsyncPlugins:
        """Register, activate, configure, watch and invoke plugins."""
        return AsyncPlugins(self)

    @cached_property
    def nodes(self) -> AsyncNodes:
        """The service's replicas and what each runs (scope plugins:admin)."""
        return AsyncNodes(self)

    @cached_property
    def audit(self) -> AsyncAudit:
        """The audit trail of state changes: who, what, when, how it ended (scope plugins:admin)."""
        return AsyncAudit(self)

    # ------------------------------------------------------------ lifetime

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the connections (not those of an `http_client` you passed in)."""
        if self._owns_http_client:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncMLXClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------ sending

    async def _sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def _request(self, request: APIRequest[R]) -> R:
        request_id = new_request_id()
        attempt = 0
        while True:
            http_request = self._build_request(self._http, request, request_id)
            try:
                response = await self._http.send(http_request)
            except httpx.RequestError as exc:
                delay = self._retry_delay(request, attempt, error=exc)
                if delay is None:
                    raise self._connection_error(request, exc, attempt + 1) from exc
            else:
                delay = self._retry_delay(request, attempt, response=response)
                if delay is None:
                    return self._process_response(request, response)
                await response.aclose()
            await self._sleep(delay)
            attempt += 1


class AsyncPlugins:
    """`client.plugins`: the `/v1/plugins` endpoints, awaited."""

    def __init__(self, client: AsyncMLXClient) -> None:
        self._client = client

    async def list(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        category: str | None = None,
        search: str | None = None,
        page: int = 1,
        limit: int | None = None,
        sort: PluginSort | None = None,
    ) -> AsyncPage[PluginSummary]:
        """One page of plugins (`limit` per page, 20 by default, at most 100).

        `async for` over the page walks every following page too; `.data` is this page only.
        `status`: registered, active, inactive or error. `search` matches names and
        descriptions, ranked (name matches first). `sort`, without `search`: `created_at`
        (the default), `name` or `type`, reversed by a leading `-` (`"-name"`); the following
        pages keep it.
        """

        async def fetch(number: int) -> AsyncPage[PluginSummary]:
            request = _requests.list_plugins(
                type=type,
                status=status,
                category=category,
                search=search,
                page=number,
                limit=limit,
                sort=sort,
            )
            items, pagination = await self._client._request(request)
            return AsyncPage(items, pagination, fetch)

        return await fetch(page)

    async def get(self, plugin_id: str) -> PluginDetail:
        """A plugin's details: metadata, schema, configuration (secrets masked), metrics."""
        return await self._client._request(_requests.get_plugin(plugin_id))

    async def register(
        self,
        body: RegisterPluginRequest | Mapping[str, Any] | None = None,
        /,
        *,
        dry_run: bool = False,
        **fields: Any,
    ) -> RegisterResult:
        """Register a plugin: a dict (or `RegisterPluginRequest`) of the register fields,
        and/or those fields as keyword arguments. `dry_run=True` checks and stores nothing."""
        return await self._client._request(_requests.register_plugin(body, fields, dry_run=dry_run))

    async def delete(self, plugin_id: str, *, force: bool = False) -> DeleteResult:
        """Unregister a plugin; `force=True` deactivates an active one first."""
        return await self._client._request(_requests.delete_plugin(plugin_id, force=force))

    async def configuration_schema(self, plugin_id: str) -> dict[str, Any]:
        """The configuration schema as standard JSON Schema (draft 2020-12)."""
        return await self._client._request(_requests.configuration_schema(plugin_id))

    async def activate(
        self,
        plugin_id: str,
        body: ActivateRequest | Mapping[str, Any] | None = None,
        /,
        *,
        configuration: Mapping[str, Any] | None = None,
        auto_start: bool | None = None,
        dry_run: bool = False,
    ) -> ActivateResult:
        """Activate a plugin: `activate(id, {"configuration": {...}})` or
        `activate(id, configuration={...}, auto_start=False)`. The configuration is merged
        over the stored one."""
        return await self._client._request(
            _requests.activate_plugin(
                plugin_id,
                body,
                configuration=configuration,
                auto_start=auto_start,
                dry_run=dry_run,
            )
        )

    async def deactivate(
        self, plugin_id: str, *, force: bool = False, graceful_shutdown_timeout: float = 30
    ) -> DeactivateResult:
        """Deactivate a plugin, waiting up to `graceful_shutdown_timeout` seconds for calls
        in flight unless `force`."""
        return await self._client._request(
            _requests.deactivate_plugin(
                plugin_id, force=force, graceful_shutdown_timeout=graceful_shutdown_timeout
            )
        )

    async def update_configuration(
        self,
        plugin_id: str,
        configuration: Mapping[str, Any],
        restart_required: bool = False,
        *,
        dry_run: bool = False,
    ) -> ConfigurationUpdateResult:
        """Change some configuration fields. `restart_required=True` allows the service to
        restart the plugin when a changed field cannot be applied hot."""
        return await self._client._request(
            _requests.update_configuration(
                plugin_id, configuration, restart_required=restart_required, dry_run=dry_run
            )
        )

    async def health_check(self, plugin_id: str) -> HealthReport:
        """Run the plugin's health check now."""
        return await self._client._request(_requests.health_check(plugin_id))

    async def metrics(
        self,
        plugin_id: str,
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        granularity: str | None = None,
    ) -> MetricsReport:
        """Recorded metrics; default: the last 24 hours by hour. Times are datetimes (naive
        ones are UTC) or ISO 8601 strings; `granularity`: minute, hour or day."""
        return await self._client._request(
            _requests.plugin_metrics(
                plugin_id, start_time=start_time, end_time=end_time, granularity=granularity
            )
        )

    async def discover(
        self,
        *,
        sources: Sequence[str] | str | None = None,
        include_namespace: str | None = None,
        auto_register: bool = False,
    ) -> DiscoveryResult:
        """Find plugins in `sources` (filesystem, pypi, git; default all) without running
        them; `auto_register=True` (admin) registers the compatible new ones."""
        return await self._client._request(
            _requests.discover_plugins(
                sources=sources, include_namespace=include_namespace, auto_register=auto_register
            )
        )

    async def validate_composition(
        self, plugins: Iterable[Mapping[str, Any] | CompositionEntry | str]
    ) -> CompositionResult:
        """Check that plugins can run together: each a name, or `{"name", "version"}` where
        the version may be a PEP 440 specifier."""
        return await self._client._request(_requests.validate_composition(plugins))

    async def invoke(
        self,
        plugin_id: str,
        operation: str,
        arguments: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> InvokeResult:
        """Call an `@operation` of an active plugin; `timeout` bounds the call in seconds."""
        return await self._client._request(
            _requests.invoke_plugin(plugin_id, operation, arguments, timeout=timeout)
        )


class AsyncNodes:
    """`client.nodes`: the `/v1/nodes` endpoint, awaited."""

    def __init__(self, client: AsyncMLXClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[Node]:
        """Every replica of the service on its database, oldest first: heartbeat, capacity
        and the plugin instances it runs; `this_node` marks the one that answered. Needs
        scope plugins:admin (`ForbiddenError` otherwise)."""
        return await self._client._request(_requests.list_nodes())


class AsyncAudit:
    """`client.audit`: the `/v1/audit` endpoint, awaited."""

    def __init__(self, client: AsyncMLXClient) -> None:
        self._client = client

    async def list(
        self,
        *,
        plugin_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        page: int = 1,
        limit: int = 50,
    ) -> AsyncPage[AuditEvent]:
        """One page of the audit trail, newest first (`limit` per page, at most 100).

        Every state change, refused ones included: register, activate, deactivate,
        configure, delete, auto_register; who made it (the token's subject), when, through
        which request, and its `outcome` (success, or failure with its `error_code`).
        Filters combine: `action` is one of those names, `outcome` success or failure,
        `since` (inclusive) and `until` (exclusive) datetimes or ISO 8601 strings (a naive
        datetime is UTC). `async for` over the page walks every following page too; `.data` is this
        page only. Needs scope plugins:admin (`ForbiddenError` otherwise).
        """

        async def fetch(number: int) -> AsyncPage[AuditEvent]:
            request = _requests.list_audit(
                plugin_id=plugin_id,
                actor=actor,
                action=action,
                outcome=outcome,
                since=since,
                until=until,
                page=number,
                limit=limit,
            )
            items, pagination = await self._client._request(request)
            return AsyncPage(items, pagination, fetch)

        return await fetch(page)
