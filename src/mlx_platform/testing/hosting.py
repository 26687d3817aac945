"""A plugin in a worker process of its own, started as the service starts it on activation.

The same steps as the service's reconciler, with the same parts: the runtime's plugin host
creates the worker (`isolation: process`, scrubbed environment, the memory cap and the
variables the metadata declares: core.definition.worker_options_for), the configuration is
the schema's defaults under the given values, checked by the functions activation uses
(core.config_schema), then configure(), start() and, unless asked not to, the first health
check. Calls go through the worker's protocol, so arguments and results cross the same JSON
boundary as an invocation through the API, and fail with the same errors
(`mlx_platform.errors`: InvalidArgumentsError, PluginExecutionError, ...).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_platform.core import config_schema
from mlx_platform.core.definition import parse_manifest, worker_options_for
from mlx_platform.errors import (
    InvalidConfigurationError,
    MLXError,
    PluginHealthCheckFailedError,
    ValidationError,
)
from mlx_platform.plugins import load_manifest
from mlx_platform.runtime.host import PluginHost
from mlx_platform.runtime.instance import HealthOutcome, RunningInstance, bring_up_failure
from mlx_platform.runtime.loading import ClassLoadError

if TYPE_CHECKING:
    from mlx_platform.settings import Settings

_ids = itertools.count(1)


def _settings(settings: Settings | None) -> Settings:
    from mlx_platform.settings import Settings

    return settings if settings is not None else Settings()


class HostedPlugin:
    """A started plugin instance in its worker process; a context manager that stops it."""

    def __init__(
        self,
        instance: RunningInstance,
        manifest: dict[str, Any],
        configuration: dict[str, Any],
        settings: Settings,
    ) -> None:
        self.instance = instance
        self.manifest = manifest
        self.configuration = configuration  # what the plugin was configured with (defaults in)
        self.settings = settings

    @property
    def name(self) -> str:
        return str(self.manifest.get("name"))

    @property
    def pid(self) -> int | None:
        """The worker process."""
        return self.instance.pid

    @property
    def operations(self) -> list[str]:
        return list(getattr(self.instance, "operations", []))

    def invoke(self, operation: str, /, timeout: float | None = 30.0, **arguments: Any) -> Any:
        """Call an `@operation` with keyword arguments; its result as a client gets it (what
        crossed the worker's JSON boundary), or the API's error for it."""
        return self.instance.invoke(operation, dict(arguments), timeout)

    def health(self, timeout: float | None = None) -> HealthOutcome:
        """Run the health check now, under the service's timeout (MLX_HEALTH_TIMEOUT)."""
        return self.instance.health(timeout or self.settings.health_timeout)

    def configure(self, configuration: Mapping[str, Any]) -> dict[str, Any]:
        """A hot configuration update: `configuration` merged over the current one, checked
        against the schema, handed to the plugin's configure(). The configuration now."""
        merged = _checked(self.manifest, {**self.configuration, **configuration})
        self.instance.configure(merged, self.settings.health_timeout * 6)
        self.configuration = merged
        return merged

    def stop(self) -> None:
        """Call the plugin's stop() and end its worker (and whatever it started)."""
        self.instance.stop(graceful_timeout=5.0, force=False)

    def __enter__(self) -> HostedPlugin:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _registered(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as registration stores it (a JSON Schema configuration schema in the
    spec's field form), or VALIDATION_ERROR naming every problem registration refuses."""
    req, problems = parse_manifest(manifest)
    if req is None or problems:
        listing = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise ValidationError(f"Invalid plugin definition: {listing}", problems)
    stored = req.model_dump(exclude_none=True)
    stored["configuration_schema"] = {
        k: v.model_dump(exclude_none=True) for k, v in req.configuration_schema.items()
    }
    return stored


def _checked(manifest: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    """The configuration with the schema's defaults, or INVALID_CONFIGURATION naming every
    bad field (activation's check, core.config_schema)."""
    schema = manifest.get("configuration_schema") or {}
    full = config_schema.apply_defaults(schema, configuration)
    problems = config_schema.validate_configuration(schema, full)
    if problems:
        listing = "; ".join(f"{k} {v}" for k, v in problems.items())
        raise InvalidConfigurationError(
            f"Configuration of plugin '{manifest.get('name')}' is invalid: {listing}", problems
        )
    return full


def host_plugin(
    manifest: Mapping[str, Any] | str | Path,
    configuration: Mapping[str, Any] | None = None,
    *,
    extra_paths: list[str | Path] | None = None,
    settings: Settings | None = None,
    health_check: bool = True,
) -> HostedPlugin:
    """Start the plugin of `manifest` (a dict of the register fields, or a `mlx-plugin.toml`
    path) in a worker process, configured with `configuration` (the schema's defaults fill
    the rest) and started, as activation starts it. `extra_paths`: folders its class_path
    imports from (as MLX_PLUGIN_PATH's folders are for the service), besides MLX_PLUGIN_PATH's.

    Raises ValidationError (a manifest registration refuses), InvalidConfigurationError (a
    bad configuration), PluginHealthCheckFailedError (the
    class did not load, configure() or start() failed, or the first health check failed:
    `details["stage"]` says which), as activation answers them."""
    if isinstance(manifest, str | Path):
        manifest = load_manifest(manifest)
    manifest = _registered(dict(manifest))
    settings = _settings(settings)
    name = manifest.get("name")
    full = _checked(manifest, dict(configuration or {}))
    paths = [str(p) for p in (extra_paths or [])] + [str(p) for p in settings.plugin_dirs]
    host = PluginHost()
    try:
        instance = host.create(
            f"hosted_{name}_{next(_ids)}",
            str(manifest.get("class_path")),
            isolation="process",
            extra_paths=paths,
            load_timeout=settings.class_check_timeout,
            options=worker_options_for(settings, dict(manifest.get("metadata") or {})),
        )
    except (ClassLoadError, MLXError) as exc:
        raise bring_up_failure(str(name), "load", exc) from None
    start_timeout = settings.health_timeout * 6  # the reconciler's
    try:
        instance.configure(full, start_timeout)
        instance.start(start_timeout)
    except MLXError as exc:
        instance.stop(graceful_timeout=0, force=True)
        raise bring_up_failure(str(name), "start", exc) from None
    hosted = HostedPlugin(instance, manifest, full, settings)
    if health_check:
        outcome = hosted.health()
        if not outcome.healthy:
            instance.stop(graceful_timeout=0, force=True)
            raise PluginHealthCheckFailedError(
                f"Plugin '{name}' failed its first health check: {outcome.message}",
                {"stage": "health_check", "reason": outcome.message},
            )
    return hosted
