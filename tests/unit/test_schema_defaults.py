"""Registration's check of a configuration schema's own definition (issue 14): each default is
held to its own field's rules, every bad field is named at once, secrets are never quoted."""

from __future__ import annotations

from mlx_platform.core.config_schema import check_schema_definition


def test_every_bad_default_is_named_at_once_and_good_ones_pass() -> None:
    schema = {
        "port": {"type": "integer", "default": "8080"},
        "region": {"type": "string", "enum": ["eu", "us"], "default": "asia"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 9},
        "ids": {"type": "array", "items": {"type": "integer"}, "default": [1, "two"]},
        "flag": {"type": "integer", "default": True},  # a bool is no integer here
        "fine": {"type": "number", "default": 0.5, "minimum": 0},
        "needed": {"type": "string", "required": True},  # required, no default: fine
    }
    assert check_schema_definition(schema) == {
        "configuration_schema.port.default": "the default must be of type integer",
        "configuration_schema.region.default": "the default must be one of: 'eu', 'us'",
        "configuration_schema.retries.default": "the default must be <= 5",
        "configuration_schema.ids.default": "the default item 1 must be of type integer",
        "configuration_schema.flag.default": "the default must be of type integer",
    }


def test_a_secret_default_is_never_quoted() -> None:
    schema = {"password": {"type": "string", "secret": True, "enum": ["a"], "default": "hunter2"}}
    problems = check_schema_definition(schema)
    assert problems == {
        "configuration_schema.password.default": "the default is not one of the allowed values"
    }


def test_items_that_are_not_json_schema_are_named_and_their_default_left_alone() -> None:
    schema = {"tags": {"type": "array", "items": {"type": "text"}, "default": ["a"]}}
    problems = check_schema_definition(schema)
    assert list(problems) == ["configuration_schema.tags"]
    assert problems["configuration_schema.tags"].startswith("not a valid schema (items.type)")


def test_a_bad_pattern_is_named_and_its_default_not_matched_against_it() -> None:
    schema = {"code": {"type": "string", "pattern": "([a-z", "default": "abc"}}
    assert list(check_schema_definition(schema)) == ["configuration_schema.code.pattern"]
