"""pytest fixtures for plugin authors, loaded in every pytest run where mlx-platform is
installed (entry point `pytest11`).

- `mlx_plugin_manifest`: the plugin's manifest (the `mlx_plugin_manifest` ini option names
  its `mlx-plugin.toml`; without it, the one found under the root folder or its `src/`).
- `mlx_plugin_configuration`: the configuration the fixtures start the plugin with (default
  {}: the schema's defaults); override it to give required fields.
- `mlx_hosted_plugin`: the plugin in a worker process of its own, configured and started as
  the service starts it on activation (`HostedPlugin`: `invoke(op, **args)`, `health()`,
  `configure({...})`); stopped after the test.
- `mlx_host_plugin`: a factory for more of them, `mlx_host_plugin({"field": value})`.
- `mlx_service`: `mlx serve` on a free 127.0.0.1 port with a home of its own and the plugin's
  folders in MLX_PLUGIN_PATH, the plugin registered (`LiveService`: `activate({...})`,
  `invoke(op, **args)`, `client` (the SDK), `url`, `token`, `plugin_id`); one per module.

Fixtures only, nothing autouse: a test suite that uses none of them (this project's own)
pays for nothing but this module's import, which imports nothing of mlx-platform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from mlx_platform.testing.hosting import HostedPlugin
    from mlx_platform.testing.service import LiveService

INI_MANIFEST = "mlx_plugin_manifest"


def _needs_server(exc: ModuleNotFoundError) -> NoReturn:
    pytest.fail(
        f'mlx-platform\'s plugin fixtures need {exc.name}: pip install "mlx-platform[server]"',
        pytrace=False,
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_MANIFEST,
        "mlx-platform: the plugin's mlx-plugin.toml, relative to the root folder (default: "
        "the one found under the root folder or its src/)",
        default="",
    )


@pytest.fixture(scope="session")
def mlx_plugin_manifest_path(pytestconfig: pytest.Config) -> Path:
    """The plugin's `mlx-plugin.toml`."""
    from mlx_platform.testing.manifests import find_manifests

    root = Path(pytestconfig.rootpath)
    named = str(pytestconfig.getini(INI_MANIFEST) or "")
    if named:
        path = (root / named).resolve()
        if not path.is_file():
            pytest.fail(f"{INI_MANIFEST} = {named!r}: no such file under {root}", pytrace=False)
        return path
    found = find_manifests(root)
    if len(found) != 1:
        what = "no mlx-plugin.toml" if not found else f"{len(found)} mlx-plugin.toml files"
        pytest.fail(
            f"{what} under {root} or its src/: name the plugin's with the "
            f"{INI_MANIFEST} ini option, or override the mlx_plugin_manifest fixture",
            pytrace=False,
        )
    return found[0]


@pytest.fixture(scope="session")
def mlx_plugin_manifest(mlx_plugin_manifest_path: Path) -> dict[str, Any]:
    """The plugin's manifest: the fields of the register request."""
    from mlx_platform.plugins import load_manifest

    return load_manifest(mlx_plugin_manifest_path)


@pytest.fixture(scope="session")
def mlx_plugin_paths(mlx_plugin_manifest_path: Path) -> list[Path]:
    """The folders the plugin's class_path imports from (its MLX_PLUGIN_PATH)."""
    from mlx_platform.testing.manifests import import_roots

    return import_roots(mlx_plugin_manifest_path)


@pytest.fixture
def mlx_plugin_configuration() -> dict[str, Any]:
    """The configuration the plugin is started with (the schema's defaults fill the rest)."""
    return {}


@pytest.fixture
def mlx_host_plugin(
    mlx_plugin_manifest: dict[str, Any], mlx_plugin_paths: list[Path]
) -> Iterator[Callable[..., HostedPlugin]]:
    """Start the plugin in worker processes: `mlx_host_plugin(configuration)`; each is
    stopped after the test."""
    try:
        from mlx_platform.testing.hosting import host_plugin
    except ModuleNotFoundError as exc:
        _needs_server(exc)

    started: list[HostedPlugin] = []

    def start(configuration: dict[str, Any] | None = None, **options: Any) -> HostedPlugin:
        options.setdefault("extra_paths", list(mlx_plugin_paths))
        hosted = host_plugin(mlx_plugin_manifest, configuration, **options)
        started.append(hosted)
        return hosted

    yield start
    for hosted in started:
        hosted.stop()


@pytest.fixture
def mlx_hosted_plugin(
    mlx_host_plugin: Callable[..., HostedPlugin], mlx_plugin_configuration: dict[str, Any]
) -> HostedPlugin:
    """The plugin in a worker process, configured with `mlx_plugin_configuration`, started,
    its first health check passed, as activation leaves it."""
    return mlx_host_plugin(mlx_plugin_configuration)


@pytest.fixture(scope="module")
def mlx_service(
    tmp_path_factory: pytest.TempPathFactory,
    mlx_plugin_manifest: dict[str, Any],
    mlx_plugin_paths: list[Path],
) -> Iterator[LiveService]:
    """A live `mlx serve` with the plugin registered (not activated)."""
    try:
        from mlx_platform.testing.service import start_service
    except ModuleNotFoundError as exc:
        _needs_server(exc)

    home = tmp_path_factory.mktemp("mlx-service") / "home"
    service = start_service(home, plugin_path=list(mlx_plugin_paths))
    try:
        service.register(mlx_plugin_manifest)
        yield service
    finally:
        service.stop()
