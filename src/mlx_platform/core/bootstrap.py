"""First start: migrations, example plugins; every start: plugins stored as active."""

from __future__ import annotations

import logging

from mlx_platform.core.context import Core
from mlx_platform.core.lifecycle import restore_active_plugins
from mlx_platform.core.registry import register_plugin
from mlx_platform.errors import PluginAlreadyExistsError
from mlx_platform.plugins import manifest_from_class
from mlx_platform.storage.repositories import MetaRepository
from mlx_platform.wire import RegisterPluginRequest

log = logging.getLogger("mlx_platform.bootstrap")
_SEEDED = "builtin_plugins_seeded"


def builtin_manifests() -> list[dict[str, object]]:
    from mlx_platform.builtin import BUILTIN_PLUGINS

    return [manifest_from_class(cls) for cls in BUILTIN_PLUGINS]


def seed_builtin_plugins(core: Core) -> list[str]:
    """Register the example plugins once per database. Returns the ids registered now."""
    with core.db.read() as session:
        if MetaRepository(session).get(_SEEDED):
            return []
    ids: list[str] = []
    for manifest in builtin_manifests():
        try:
            result = register_plugin(core, RegisterPluginRequest.model_validate(manifest))
            ids.append(result["id"])
        except PluginAlreadyExistsError:
            continue
    with core.db.transaction() as session:
        MetaRepository(session).set(_SEEDED, "1")
    log.info("registered the example plugins: %s", ", ".join(ids) or "none")
    return ids


def start_core(core: Core) -> None:
    core.db.migrate()
    if core.settings.seed_builtin_plugins:
        seed_builtin_plugins(core)
    restore_active_plugins(core)
