"""A refused definition names every problem at once, in plain words (issue 14): the request
model's field errors and the definition's own checks (a PEP 440 version, schema defaults,
metadata the rules read) in one 422, no regular expression quoted; `mlx plugins check` says
the same of a manifest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, clean_env, forked_mlx, plugin_body

VERSION_REASON = "must be a version such as 1.2.0 (PEP 440)"
# what a regular expression, or pydantic's own wording, would leave in a reason
NOT_PLAIN = re.compile(r"[\^$\\]|\[[A-Za-z]-|\{\d|pattern|String should|Field required")


def refused(admin: httpx.Client, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    params = {"dry_run": "true"} if dry_run else {}
    return assert_error(
        admin.post("/v1/plugins", json=body, params=params), 422, "VALIDATION_ERROR"
    )


@pytest.mark.parametrize("dry_run", [False, True], ids=["register", "dry run"])
def test_a_bad_version_shows_with_a_bad_name_and_type(admin: httpx.Client, dry_run: bool) -> None:
    body = plugin_body("Bad Name!", type="Bad Type", version="one point oh")
    err = refused(admin, body, dry_run)
    assert set(err["details"]) == {"name", "type", "version"}, err
    assert err["details"]["version"] == VERSION_REASON
    assert err["details"]["name"].startswith("must start with a letter")
    assert err["details"]["type"].startswith("must be lower-case letters")
    assert err["message"].endswith("(and 2 more)"), err["message"]


def test_every_problem_of_a_definition_in_one_answer(admin: httpx.Client) -> None:
    body = plugin_body(
        "ok_name_but_everything_else",
        version="1.0 beta",
        class_path="not a class path",
        configuration_schema={
            "size": {"type": "integer", "default": "big"},  # a default that breaks its type
            "mode": {"type": "date"},  # a type the model refuses
        },
        metadata={"requires": ["bad spec!!"]},
        colour="blue",
    )
    details = refused(admin, body)["details"]
    assert set(details) == {
        "version",
        "class_path",
        "colour",
        "configuration_schema.mode.type",
        "configuration_schema.size.default",
        "metadata.requires[0]",
    }, details
    assert details["version"] == VERSION_REASON
    assert details["class_path"].startswith("must be the dotted path of a class")
    assert "\n" not in details["metadata.requires[0]"]  # no parser diagram under the text


def test_reasons_are_plain_words(admin: httpx.Client) -> None:
    bodies = [
        plugin_body("-x", type="9", version="?", class_path="a..b"),
        {"description": "nothing else"},
        plugin_body("ok", metadata={"python_requirements": ["not ok !!"]}),
    ]
    for body in bodies:
        err = refused(admin, body)
        for field, reason in err["details"].items():
            assert not NOT_PLAIN.search(reason), (field, reason)
            assert "\n" not in reason, (field, reason)
        assert not NOT_PLAIN.search(err["message"]), err["message"]
    # (name, type and version may come from the class's manifest: class_path alone is required)
    missing = refused(admin, {"description": "nothing else"})["details"]
    assert missing == {"class_path": "is required"}


def test_mlx_plugins_check_names_every_problem_of_a_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "bad_plugin"
    folder.mkdir()
    (folder / "mlx-plugin.toml").write_text(
        'name = "Bad Name!"\ntype = "Bad Type"\nversion = "one point oh"\n'
        'class_path = "mlx_test_plugins.EchoPlugin"\n'
    )
    proc = forked_mlx(["plugins", "check", str(folder)], clean_env(MLX_HOME=str(tmp_path / "h")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("fail  manifest"))
    assert f"version: {VERSION_REASON}" in line, line
    assert "name: must start with a letter" in line and "type: must be lower-case" in line
    assert not NOT_PLAIN.search(line), line
