from mlx_platform.core import config_schema

SCHEMA = {
    "connection_string": {"type": "string", "required": True},
    "password": {"type": "string", "secret": True, "pattern": "^[a-z]+$"},
    "pool_size": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
    "ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "mode": {"type": "string", "enum": ["fast", "safe"]},
    "verbose": {"type": "boolean"},
    "tags": {"type": "array"},
    "options": {"type": "object"},
}


def test_valid_configuration_has_no_problems() -> None:
    config = {
        "connection_string": "x",
        "pool_size": 3,
        "ratio": 0.5,
        "mode": "fast",
        "verbose": True,
        "tags": ["a"],
        "options": {"k": 1},
        "undeclared": 1,
    }
    assert config_schema.validate_configuration(SCHEMA, config) == {}


def test_one_problem_per_bad_field() -> None:
    config = {
        "pool_size": 99,
        "ratio": -1,
        "mode": "slow",
        "verbose": "yes",
        "tags": "a",
        "options": [],
    }
    problems = config_schema.validate_configuration(SCHEMA, config)
    assert set(problems) == {
        "connection_string",
        "pool_size",
        "ratio",
        "mode",
        "verbose",
        "tags",
        "options",
    }
    assert problems["connection_string"] == "is required"
    assert problems["pool_size"] == "must be <= 50"
    assert "boolean" in problems["verbose"]


def test_boolean_is_not_an_integer() -> None:
    problems = config_schema.validate_configuration(
        SCHEMA, {"connection_string": "x", "pool_size": True}
    )
    assert problems == {"pool_size": "must be of type integer"}


def test_secret_value_never_quoted_in_problems() -> None:
    problems = config_schema.validate_configuration(
        SCHEMA, {"connection_string": "x", "password": "Sup3r-Secret!"}
    )
    assert "password" in problems
    assert "Sup3r-Secret!" not in str(problems)


def test_json_schema_form_is_standard_and_masks_secret_defaults() -> None:
    schema = {
        "token": {"type": "string", "secret": True, "default": "abcdef"},
        "n": {"type": "integer", "required": True},
    }
    js = config_schema.to_json_schema(schema)
    assert js["$schema"].endswith("2020-12/schema")
    assert js["required"] == ["n"]
    assert js["properties"]["token"]["default"] == "********"
    assert js["properties"]["token"]["writeOnly"] is True
    assert js["additionalProperties"] is True


def test_schema_definition_errors_are_reported_by_field() -> None:
    problems = config_schema.check_schema_definition(
        {"a": {"pattern": "("}, "b": {"minimum": 5, "maximum": 1}, "c": {"enum": []}}
    )
    assert set(problems) == {
        "configuration_schema.a.pattern",
        "configuration_schema.b",
        "configuration_schema.c.enum",
    }


def test_defaults_fill_missing_fields_only() -> None:
    assert config_schema.apply_defaults(SCHEMA, {"pool_size": 9})["pool_size"] == 9
    assert config_schema.apply_defaults(SCHEMA, {})["pool_size"] == 5


def test_register_accepts_configuration_schema_written_as_json_schema() -> None:
    from mlx_platform.wire import RegisterPluginRequest

    req = RegisterPluginRequest.model_validate(
        {
            "name": "p",
            "type": "data_source",
            "version": "1.0",
            "class_path": "a.B",
            "configuration_schema": {
                "type": "object",
                "properties": {
                    "dsn": {"type": "string", "description": "x"},
                    "token": {"type": "string", "writeOnly": True},
                    "n": {"type": "integer", "minimum": 1},
                },
                "required": ["dsn"],
            },
        }
    )
    schema = req.configuration_schema
    assert schema["dsn"].required and not schema["n"].required
    assert schema["token"].secret
    assert schema["n"].minimum == 1
