"""Issue 14, plugin authors' tooling: `mlx plugins new` writes a package that installs into a
fresh virtualenv and passes its own tests (on the pytest plugin's fixtures); `mlx plugins
check` passes it and fails broken copies of it, each on its check and with its reason; the
package is then discovered, registered, activated and invoked through a live service with
the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlx_platform.testing.service import start_service
from tests.conftest import ROOT, clean_env, forked_mlx

pytestmark = pytest.mark.process

NAME = "demo_source"
PACKAGE = "mlx_plugin_demo_source"
DISTRIBUTION = "mlx-plugin-demo-source"


def _environment() -> dict[str, str]:
    """This environment without MLX_*, pytest's or the suite's PYTHONPATH: a new shell's."""
    env = clean_env()
    env.pop("PYTHONPATH", None)
    for key in list(env):
        if key.startswith(("PYTEST_", "COV_")):
            del env[key]
    return env


def _fresh_venv(where: Path) -> Path:
    """A new virtualenv whose site sees this one's packages (a .pth file: the service's
    dependencies and pytest, without installing them again); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_mlx_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=env or _environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _by_check(stdout: str) -> dict[str, dict[str, str]]:
    return {line["check"]: line for line in json.loads(stdout)}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


# Each broken copy: what is changed, the check that must fail, words its reason must hold.
PLUGIN_PY = f"src/{PACKAGE}/plugin.py"
MANIFEST = f"src/{PACKAGE}/mlx-plugin.toml"
BREAKAGES: dict[str, tuple[Callable[[Path], None], str, list[str]]] = {
    "bad manifest": (
        lambda d: _edit(d / MANIFEST, 'version = "0.1.0"', 'version = "one point oh"'),
        "manifest",
        ["version", "must be a version such as 1.2.0 (PEP 440)"],
    ),
    "unloadable class": (
        lambda d: _edit(d / MANIFEST, ".plugin.DemoSourcePlugin", ".plugin.NoSuchPlugin"),
        "class loadable",
        ["has no attribute 'NoSuchPlugin'"],
    ),
    "missing package": (
        lambda d: _edit(
            d / PLUGIN_PY,
            "from pathlib import Path",
            "import mlx_absent_dependency\nfrom pathlib import Path",
        ),
        "class loadable",
        [f"'{PACKAGE}.plugin' imports 'mlx_absent_dependency', which is not installed"],
    ),
    "bad schema default": (
        lambda d: _edit(d / MANIFEST, 'default = ""', "default = 5"),
        "configuration schema",
        ["configuration_schema.prefix.default", "the default must be of type string"],
    ),
    "failing health check": (
        lambda d: _edit(
            d / PLUGIN_PY,
            '        token = "set"',
            '        raise ConnectionError("the warehouse is unreachable")\n        token = "set"',
        ),
        "health check",
        ["ConnectionError: the warehouse is unreachable"],
    ),
    "unserialisable result": (
        lambda d: _edit(d / PLUGIN_PY, '"calls": self.calls}', '"calls": {self.calls}}'),
        "operation echo",
        ["PLUGIN_EXECUTION_ERROR", "not JSON"],
    ),
}


def test_a_new_plugin_installs_passes_its_tests_and_checks_and_runs_in_a_service(
    tmp_path: Path,
) -> None:
    package = tmp_path / "pkg"
    made = forked_mlx(
        ["plugins", "new", NAME, "--type", "data_source", "--dir", str(package)], clean_env()
    )
    assert made.returncode == 0, made.stderr
    assert (package / "pyproject.toml").is_file() and (package / MANIFEST).is_file()

    # installed into a fresh virtualenv, as the Makefile installs (pip, editable), its own
    # tests pass there: in a worker process and in a live service (the pytest plugin)
    python = _fresh_venv(tmp_path / "venv")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--disable-pip-version-check", "-e", str(ROOT), "-e", str(package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    tests = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout, tests.stdout

    # every check passes, by its folder and by its installed distribution (the entry point)
    for target in (str(package), DISTRIBUTION):
        checked = _run(python, "-m", "mlx_platform.cli.main", "plugins", "check", target, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        lines = _by_check(checked.stdout)
        assert {c for c, line in lines.items() if line["status"] == "pass"} == {
            "manifest",
            "configuration schema",
            "class loadable",
            "platform",
            "configuration",
            "start",
            "health check",
            "operation echo",
        }, lines
        assert {c for c, line in lines.items() if line["status"] == "skip"} == {
            "service loads the class",
            "composition",
        }, lines

    # each broken copy fails its check, with its reason, and exits non-zero
    for what, (breaks, check, words) in BREAKAGES.items():
        copy = tmp_path / what.replace(" ", "_")
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        breaks(copy)
        checked = forked_mlx(["plugins", "check", str(copy), "--json"], clean_env())
        assert checked.returncode == 1, (what, checked.stdout, checked.stderr)
        lines = _by_check(checked.stdout)
        failed = {c for c, line in lines.items() if line["status"] == "fail"}
        assert failed == {check}, (what, lines)
        for word in words:
            assert word in lines[check]["reason"], (what, lines[check])
        people = (
            forked_mlx(["plugins", "check", str(copy)], clean_env())
            if what == "bad manifest"
            else None
        )
        if people is not None:  # one line per check, the failure with its reason
            assert people.returncode == 1
            assert any(
                line.startswith("fail") and "manifest" in line and "PEP 440" in line
                for line in people.stdout.splitlines()
            ), people.stdout

    # a live service of the virtualenv: discovered (installed: its entry point), registered,
    # activated and invoked with the CLI; then checked against it
    service = start_service(tmp_path / "home", python=str(python))
    try:
        env = clean_env(**service.env())
        found = forked_mlx(["plugins", "discover", "--source", "pypi", "--json"], env)
        assert found.returncode == 0, found.stderr
        mine = [p for p in json.loads(found.stdout)["discovered_plugins"] if p["name"] == NAME]
        assert len(mine) == 1 and mine[0]["compatible"] and not mine[0]["already_registered"]
        assert mine[0]["class_path"] == f"{PACKAGE}.plugin.DemoSourcePlugin"

        registered = forked_mlx(
            ["plugins", "register", "-f", str(package / MANIFEST), "--json"], env
        )
        assert registered.returncode == 0, registered.stderr
        plugin_id = json.loads(registered.stdout)["id"]
        activated = forked_mlx(
            ["plugins", "activate", plugin_id, "-c", "prefix=>> ", "-c", "api_token=s3cret"], env
        )
        assert activated.returncode == 0, activated.stderr
        invoked = forked_mlx(["plugins", "invoke", plugin_id, "echo", "message=hi", "--json"], env)
        assert invoked.returncode == 0, invoked.stderr
        assert json.loads(invoked.stdout)["result"] == {"message": ">> hi", "calls": 1}

        against = forked_mlx(["plugins", "check", str(package), "--json"], env)
        assert against.returncode == 0, against.stdout + against.stderr
        lines = _by_check(against.stdout)
        assert lines["composition"]["status"] == "pass", lines["composition"]
        assert "registered there already" in lines["service loads the class"]["reason"]

        # another plugin declaring a conflict with it: its composition fails, with the reason
        rival = tmp_path / "rival"
        shutil.copytree(package, rival, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        _edit(rival / MANIFEST, f'name = "{NAME}"', 'name = "rival_source"')
        _edit(rival / MANIFEST, "[metadata]\n", f'[metadata]\nconflicts_with = ["{NAME}"]\n')
        rivalled = forked_mlx(["plugins", "check", str(rival), "--json"], env)
        assert rivalled.returncode == 1, rivalled.stdout + rivalled.stderr
        lines = _by_check(rivalled.stdout)
        assert {c for c, line in lines.items() if line["status"] == "fail"} == {"composition"}
        assert NAME in lines["composition"]["reason"], lines["composition"]
        assert lines["service loads the class"]["status"] == "pass"
    finally:
        service.stop()


# ---------------------------------------------------------------- mlx plugins new: refusals


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["9lives", "--type", "data_source"], "NAME '9lives' is not a plugin name"),
        (["has space", "--type", "data_source"], "NAME 'has space' is not a plugin name"),
        (["fine", "--type", "Data Source"], "--type 'Data Source' is not a plugin type"),
        (["fine", "--type", ""], "--type '' is not a plugin type"),
    ],
    ids=["name-starts-with-a-digit", "name-with-a-space", "type-with-capitals", "empty-type"],
)
def test_new_refuses_a_bad_name_or_type_in_one_line_writing_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    target = tmp_path / "pkg"
    made = forked_mlx(["plugins", "new", *args, "--dir", str(target)], clean_env())
    assert made.returncode == 2, made
    assert made.stderr.strip().splitlines() == [made.stderr.strip()]  # one line
    assert made.stderr.startswith(f"error: {says}"), made.stderr
    assert not target.exists()


def test_new_refuses_a_folder_that_is_not_empty_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    made = forked_mlx(
        ["plugins", "new", "fine", "--type", "data_source", "--dir", str(target)], clean_env()
    )
    assert made.returncode == 2
    assert made.stderr.strip() == f"error: {target} is not empty: give another --dir"
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"


def test_new_writes_into_an_empty_folder_and_names_the_package_after_the_plugin(
    tmp_path: Path,
) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    made = forked_mlx(
        ["plugins", "new", "Warehouse-Source.v2", "--type", "feature_store", "--dir", str(target)],
        clean_env(),
    )
    assert made.returncode == 0, made.stderr
    manifest = (target / "src" / "mlx_plugin_warehouse_source_v2" / "mlx-plugin.toml").read_text()
    assert 'name = "Warehouse-Source.v2"' in manifest and 'type = "feature_store"' in manifest
    assert (
        'class_path = "mlx_plugin_warehouse_source_v2.plugin.WarehouseSourceV2Plugin"' in manifest
    )
    pyproject = (target / "pyproject.toml").read_text()
    assert 'name = "mlx-plugin-warehouse-source-v2"' in pyproject
    assert '[project.entry-points."mlx_platform.plugins"]' in pyproject


# ---------------------------------------------------------------- mlx plugins check: inputs


def _manifest_folder(where: Path, class_path: str, schema: str = "") -> Path:
    where.mkdir(parents=True)
    (where / "mlx-plugin.toml").write_text(
        f'name = "checked"\ntype = "data_source"\nversion = "1.0.0"\nclass_path = "{class_path}"\n'
        + schema
    )
    return where


def test_check_needs_the_required_configuration_and_calls_operations_with_given_arguments(
    tmp_path: Path,
) -> None:
    folder = _manifest_folder(
        tmp_path / "echo",
        "mlx_test_plugins.EchoPlugin",
        '[configuration_schema.token]\ntype = "string"\nrequired = true\nsecret = true\n',
    )
    bare = _by_check(forked_mlx(["plugins", "check", str(folder), "--json"], clean_env()).stdout)
    assert bare["configuration"]["status"] == "fail"
    assert "token is required" in bare["configuration"]["reason"]
    assert bare["start"]["status"] == "skip"

    given = forked_mlx(
        ["plugins", "check", str(folder), "--json", "-c", "token=abc"]
        + ["--args", 'add={"a": 1, "b": 2}'],
        clean_env(),
    )
    lines = _by_check(given.stdout)
    assert lines["configuration"]["status"] == "pass"
    assert lines["operation add"]["status"] == "pass", lines["operation add"]
    assert "the given arguments" in lines["operation add"]["reason"]
    assert lines["operation echo"]["status"] == "skip"
    assert lines["operation echo"]["reason"].startswith("needs arguments: value")
    assert lines["operation config_snapshot"]["status"] == "pass"
    # an operation that raises when called with its defaults is a failure, with its words
    assert lines["operation fail"]["status"] == "fail"
    assert "PluginError: boom" in lines["operation fail"]["reason"]
    assert given.returncode == 1


def test_check_fails_a_health_check_that_does_not_answer_within_the_timeout(
    tmp_path: Path,
) -> None:
    folder = _manifest_folder(tmp_path / "hang", "mlx_test_plugins.HangingHealthPlugin")
    t0 = time.monotonic()
    checked = forked_mlx(
        ["plugins", "check", str(folder), "--json"], clean_env(MLX_HEALTH_TIMEOUT="0.5")
    )
    lines = _by_check(checked.stdout)
    assert lines["health check"]["status"] == "fail"
    assert lines["health check"]["reason"] == (
        "health_check() did not answer within 0.5 s (MLX_HEALTH_TIMEOUT: 0.5 s)"
    )
    assert checked.returncode == 1
    assert time.monotonic() - t0 < 15


def test_check_of_nothing_it_can_read_fails_the_manifest_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    checked = forked_mlx(["plugins", "check", str(tmp_path / "nowhere-at-all")], clean_env())
    assert checked.returncode == 1
    first = checked.stdout.splitlines()[0]
    assert first.startswith("fail  manifest"), checked.stdout
    assert "no installed distribution" in first
    assert all(
        line.startswith(("fail  manifest", "skip")) for line in checked.stdout.splitlines()[:-1]
    )
