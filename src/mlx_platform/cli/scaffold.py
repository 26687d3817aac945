"""`mlx plugins new`: a complete plugin package, installable and tested from the start.

What it writes (for `mlx plugins new warehouse --type data_source`):

    mlx-plugin-warehouse/
      pyproject.toml                      the entry point (group mlx_platform.plugins)
      README.md
      src/mlx_plugin_warehouse/
        __init__.py
        plugin.py                         a Plugin subclass with one @operation
        mlx-plugin.toml                   the manifest: the one place its fields are written
      tests/test_plugin.py                tests on mlx-platform's pytest fixtures

The manifest is written once, in `mlx-plugin.toml`: the entry point names a function that
returns it (discovery of installed packages reads it there), and a plugin folder in
MLX_PLUGIN_PATH is read from the same file. Nothing is written unless everything can be.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

TYPE_PATTERN = r"^[a-z][a-z0-9_]*$"  # the register request's `type`
KNOWN_TYPES = ("data_source", "ml_platform", "experiment_tracker", "feature_store")


class ScaffoldError(ValueError):
    """Why nothing was written."""


@dataclass(frozen=True)
class Names:
    plugin: str  # the plugin's name in the service
    type: str
    distribution: str  # mlx-plugin-<name>, the project name discovery looks for on an index
    package: str  # the import package
    cls: str  # the Plugin subclass


def names_for(name: str, plugin_type: str) -> Names:
    """The names of the package, or ScaffoldError saying what is wrong with NAME or TYPE."""
    from mlx_platform.wire import NAME_PATTERN

    if len(name) > 64 or not re.fullmatch(NAME_PATTERN, name):
        raise ScaffoldError(
            f"NAME {name!r} is not a plugin name: a letter, then letters, digits, '_', '.' or "
            "'-' (at most 64 characters)"
        )
    if len(plugin_type) > 64 or not re.fullmatch(TYPE_PATTERN, plugin_type):
        raise ScaffoldError(
            f"--type {plugin_type!r} is not a plugin type: a lower-case letter, then lower-case "
            f"letters, digits or '_' (for example {', '.join(KNOWN_TYPES)})"
        )
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    slug = "_".join(w.lower() for w in words)
    return Names(
        plugin=name,
        type=plugin_type,
        distribution="mlx-plugin-" + slug.replace("_", "-"),
        package="mlx_plugin_" + slug,
        cls="".join(w[:1].upper() + w[1:] for w in words) + "Plugin",
    )


def files_for(names: Names) -> dict[str, str]:
    """Every file of the package, by its path in the package folder."""
    from mlx_platform import __version__

    values = {
        "name": names.plugin,
        "type": names.type,
        "distribution": names.distribution,
        "package": names.package,
        "cls": names.cls,
        "platform_version": __version__,
    }
    return {
        "pyproject.toml": _PYPROJECT.format(**values),
        "README.md": _README.format(**values),
        f"src/{names.package}/__init__.py": _INIT.format(**values),
        f"src/{names.package}/plugin.py": _PLUGIN.format(**values),
        f"src/{names.package}/mlx-plugin.toml": _MANIFEST.format(**values),
        "tests/test_plugin.py": _TESTS.format(**values),
    }


def write_package(name: str, plugin_type: str, directory: Path | None) -> tuple[Path, Names]:
    """Write the package into `directory` (default ./<distribution>), which must not exist
    or be empty; the folder and the names. ScaffoldError, with nothing written, otherwise."""
    names = names_for(name, plugin_type)
    target = (directory or Path(names.distribution)).expanduser()
    if target.exists():
        if not target.is_dir():
            raise ScaffoldError(f"{target} exists and is not a folder")
        if any(target.iterdir()):
            raise ScaffoldError(f"{target} is not empty: give another --dir")
    files = files_for(names)
    created = not target.exists()
    try:
        for rel, text in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        # nothing half-written is left behind
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in list(target.iterdir()):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise ScaffoldError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target, names


# ---------------------------------------------------------------- the files

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "The {name} plugin ({type}) for mlx-platform"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["mlx-platform>={platform_version}"]
# what discovery reads of a package on an index without downloading it
keywords = ["mlx-plugin-type={type}"]

[project.optional-dependencies]
# the service's parts, which the test fixtures run the plugin in
test = ["mlx-platform[server]>={platform_version}", "pytest>=8"]

# How the service finds the plugin once the package is installed (discovery, source "pypi"):
# the target returns the manifest of mlx-plugin.toml.
[project.entry-points."mlx_platform.plugins"]
{name} = "{package}.plugin:manifest"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
{package} = ["mlx-plugin.toml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
# the manifest mlx-platform's pytest fixtures start the plugin from
mlx_plugin_manifest = "src/{package}/mlx-plugin.toml"
"""

_INIT = """\
\"\"\"The {name} plugin for mlx-platform.\"\"\"

from {package}.plugin import {cls}, manifest

__all__ = ["{cls}", "manifest"]
"""

_PLUGIN = """\
\"\"\"The {name} plugin: a {type} for mlx-platform.

The service runs it in a worker process of its own: configure() on activation and on every
hot configuration change, start() before the first call, health_check() under a timeout,
stop() on deactivation. Each @operation is callable through POST /v1/plugins/{{id}}/invoke;
its arguments and its result travel as JSON.
\"\"\"

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_platform.plugins import Plugin, PluginError, load_manifest, operation

MANIFEST_PATH = Path(__file__).with_name("mlx-plugin.toml")


def manifest() -> dict[str, Any]:
    \"\"\"The manifest in mlx-plugin.toml (the entry point's target: discovery calls it in a
    throwaway process).\"\"\"
    return load_manifest(MANIFEST_PATH)


class {cls}(Plugin):
    \"\"\"Answers messages back; replace echo() with what your plugin does.\"\"\"

    def configure(self, config: dict[str, Any]) -> None:
        super().configure(config)  # self.config: the schema's defaults and the values given

    def start(self) -> None:
        self.calls = 0

    def stop(self) -> None:
        pass  # close connections, files, threads started in start()

    def health_check(self) -> dict[str, Any]:
        token = "set" if self.config.get("api_token") else "not set"
        return {{"status": "healthy", "message": f"{{self.calls}} call(s); api_token {{token}}"}}

    @operation
    def echo(self, message: str = "hello") -> dict[str, Any]:
        \"\"\"The message back, after the configured prefix.\"\"\"
        if not message.strip():
            raise PluginError("message is empty")  # the caller gets PLUGIN_EXECUTION_ERROR
        self.calls += 1
        return {{"message": self.config.get("prefix", "") + message, "calls": self.calls}}
"""

_MANIFEST = """\
# The manifest of the {name} plugin: the fields of the register request (POST /v1/plugins).
# `mlx plugins check` checks it; `mlx plugins register -f` registers it; the entry point in
# pyproject.toml returns it.
name = "{name}"
type = "{type}"
version = "0.1.0"
description = "The {name} plugin ({type})"
class_path = "{package}.plugin.{cls}"
isolation = "process"

[configuration_schema.prefix]
type = "string"
default = ""
description = "Put before every message echo() answers"

[configuration_schema.api_token]
type = "string"
secret = true
description = "A credential: stored encrypted, shown as ******** in every answer"

[metadata]
capabilities = ["echo"]
platform_api = ">=1.0,<2"
min_python_version = "3.11"
"""

_TESTS = """\
\"\"\"Tests of the {name} plugin, on mlx-platform's pytest fixtures (installed with it):
`mlx_hosted_plugin` runs the plugin in a worker process as the service does; `mlx_service`
is a live service with the plugin registered.\"\"\"

from __future__ import annotations

import pytest

from mlx_platform.errors import InvalidArgumentsError, PluginExecutionError


def test_echo_answers_the_message(mlx_hosted_plugin) -> None:
    assert mlx_hosted_plugin.invoke("echo", message="hi") == {{"message": "hi", "calls": 1}}


def test_health_check_passes(mlx_hosted_plugin) -> None:
    assert mlx_hosted_plugin.health().healthy


def test_the_configured_prefix_comes_first(mlx_host_plugin) -> None:
    plugin = mlx_host_plugin({{"prefix": "> "}})
    assert plugin.invoke("echo", message="hi")["message"] == "> hi"


def test_an_empty_message_is_the_plugins_error(mlx_hosted_plugin) -> None:
    with pytest.raises(PluginExecutionError, match="message is empty"):
        mlx_hosted_plugin.invoke("echo", message=" ")


def test_an_unknown_argument_is_refused(mlx_hosted_plugin) -> None:
    with pytest.raises(InvalidArgumentsError):
        mlx_hosted_plugin.invoke("echo", shout=True)


def test_through_a_live_service(mlx_service) -> None:
    mlx_service.activate({{"prefix": "> ", "api_token": "s3cret"}})
    assert mlx_service.invoke("echo", message="hi")["message"] == "> hi"
    shown = mlx_service.client.plugins.get(mlx_service.plugin_id).configuration
    assert shown["api_token"] == "********"  # a secret never comes back
"""

_README = """\
# {distribution}

The `{name}` plugin ({type}) for mlx-platform, as `mlx plugins new` wrote it: ready to be
changed.

```console
$ pip install -e ".[test]"      # the plugin, and what its tests need
$ pytest                        # the plugin in a worker process, then in a live service
$ mlx plugins check .           # every check registration and activation will run
```

- `src/{package}/plugin.py`: the plugin, `{cls}` (one `@operation`, `echo`).
- `src/{package}/mlx-plugin.toml`: its manifest (name, type, version, class_path, the
  configuration schema, metadata). The entry point in `pyproject.toml` returns it.
- `tests/test_plugin.py`: tests on the fixtures of mlx-platform's pytest plugin.

## Running it in a service

Either install the package where the service runs, then discover and register it:

```console
$ mlx plugins discover --source pypi --auto-register
```

or, without installing it, put `src/` in `MLX_PLUGIN_PATH` **before the service starts**
(the service reads it when it starts) and register the manifest:

```console
$ MLX_PLUGIN_PATH=$PWD/src mlx serve
$ mlx plugins register -f src/{package}/mlx-plugin.toml
```

Then, with the id `register` printed:

```console
$ mlx plugins activate ID -c prefix="> " -c api_token=...
$ mlx plugins invoke ID echo message=hi
```
"""
