"""The table of error codes (`mlx_platform.errors.ERROR_TABLE`) and everything derived from it:
the exception classes, the SDK's retry rules and reading of bare statuses, the CLI's exit
codes and the OpenAPI error answers. `tests/integration/test_error_codes_live.py` checks the
table against what a real service answers."""

from __future__ import annotations

import inspect
from collections import Counter

import pytest

import mlx_platform
from mlx_platform import errors
from mlx_platform.cli.output import ExitCode, exit_code_for
from mlx_platform.errors import (
    ERROR_CLASSES,
    ERROR_SPECS,
    ERROR_TABLE,
    MLXConnectionError,
    MLXError,
    MLXTimeoutError,
    error_from_payload,
)
from mlx_platform.sdk import InvalidResponseError, MLXConfigurationError
from mlx_platform.sdk._base import _STATUS_CODES, RETRIED_CODES, RETRY_STATUSES, retryable_answer
from mlx_platform.server.openapi import errors_for

CODES = [spec.code for spec in ERROR_TABLE]


def test_codes_are_unique() -> None:
    assert [code for code, n in Counter(CODES).items() if n > 1] == []


@pytest.mark.parametrize("code", CODES)
def test_every_code_has_a_class_a_status_and_an_exit_code(code: str) -> None:
    spec = ERROR_SPECS[code]
    cls = ERROR_CLASSES[code]
    assert cls.code == code and cls.http_status == spec.http_status
    assert cls.retryable is spec.retryable
    assert 400 <= spec.http_status <= 599
    assert isinstance(spec.exit_code, ExitCode) and spec.exit_code != ExitCode.OK
    assert spec.description and cls.__doc__
    err = cls("it went wrong", {"plugin_id": "p"}, request_id="req_1")
    assert err.status_code == spec.http_status
    assert exit_code_for(err) == spec.exit_code
    # the SDK reads an answer with this code as this class, with the answer's status
    read = error_from_payload({"code": code, "message": "m"}, status_code=spec.http_status)
    assert type(read) is cls and read.status_code == spec.http_status


def test_every_class_of_the_module_is_in_the_table() -> None:
    """A class written by hand beside the table (with its own code) would escape it."""
    coded = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, MLXError) and cls is not MLXError and "code" in vars(cls)
    }
    sdk_only = {MLXConnectionError, MLXTimeoutError}
    assert coded - sdk_only == set(ERROR_CLASSES.values())


def test_every_class_is_exported_at_the_top_of_the_package() -> None:
    for cls in ERROR_CLASSES.values():
        assert getattr(mlx_platform, cls.__name__) is cls
        assert cls.__name__ in mlx_platform.__all__


def test_a_class_for_a_code_outside_the_table_is_refused() -> None:
    with pytest.raises(TypeError, match="not in ERROR_TABLE"):

        class _Invented(MLXError, code="NO_SUCH_CODE"):
            pass

    with pytest.raises(TypeError, match="already has PluginNotFoundError"):

        class _Twice(MLXError, code="PLUGIN_NOT_FOUND"):
            pass


def test_the_sdk_retries_exactly_the_retryable_codes() -> None:
    assert {s.code for s in ERROR_TABLE if s.retryable} == RETRIED_CODES
    for spec in ERROR_TABLE:
        assert retryable_answer(spec.http_status, spec.code) is spec.retryable, spec.code
    # a code is judged by the table, whatever its status: an older service answered
    # PLUGIN_HEALTH_CHECK_FAILED with 503, and it was never an outage
    assert retryable_answer(503, "PLUGIN_HEALTH_CHECK_FAILED") is False
    # an answer without a code (a proxy's), or with one this SDK does not know, by its status
    assert RETRY_STATUSES == {429, 503}
    assert retryable_answer(503, None) and retryable_answer(429, "SOMETHING_NEWER")
    assert not retryable_answer(502, None) and not retryable_answer(500, None)


def test_bare_statuses_map_to_one_code_each() -> None:
    owners = Counter(s.http_status for s in ERROR_TABLE if s.from_status)
    assert [status for status, n in owners.items() if n > 1] == []
    for status, code in _STATUS_CODES.items():
        assert ERROR_SPECS[code].http_status == status
    # statuses shared by several codes say nothing on their own
    assert 404 not in _STATUS_CODES and 409 not in _STATUS_CODES and 422 not in _STATUS_CODES


def test_the_cli_exit_codes_of_what_no_answer_carries() -> None:
    assert exit_code_for(MLXConnectionError("refused", url="u")) == ExitCode.UNREACHABLE
    assert exit_code_for(MLXTimeoutError("slow", url="u")) == ExitCode.UNREACHABLE
    assert exit_code_for(MLXConfigurationError("no token")) == ExitCode.INVALID_INPUT
    assert exit_code_for(InvalidResponseError("html")) == ExitCode.ERROR
    unknown = error_from_payload({"code": "SOMETHING_NEWER", "message": "m"}, status_code=418)
    assert type(unknown) is MLXError and unknown.code == "SOMETHING_NEWER"
    assert exit_code_for(unknown) == ExitCode.ERROR


@pytest.mark.parametrize(
    "exc",
    [
        MLXConnectionError("refused", url="http://127.0.0.1:9/v1/plugins"),
        MLXTimeoutError("slow", url="http://127.0.0.1:9/v1/plugins"),
        MLXConfigurationError("no token"),
        InvalidResponseError("html"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_one_root_catches_every_sdk_error(exc: Exception) -> None:
    with pytest.raises(MLXError):
        raise exc


def test_errors_without_an_answer_have_no_status_and_read_as_before() -> None:
    exc = MLXConnectionError("GET http://x/v1/plugins: could not connect", url="http://x")
    assert exc.status_code is None and exc.request_id is None
    assert str(exc) == "GET http://x/v1/plugins: could not connect"
    assert exc.code not in ERROR_SPECS and MLXTimeoutError.code not in ERROR_SPECS
    config = MLXConfigurationError("no API token")
    assert isinstance(config, ValueError) and str(config) == "no API token"
    assert config.status_code is None and config.code not in ERROR_SPECS
    assert InvalidResponseError.code not in ERROR_SPECS


def test_openapi_errors_group_the_codes_by_their_status() -> None:
    responses = errors_for(errors.InvalidStateError, errors.PluginNotFoundError)
    assert set(responses) == {401, 403, 404, 409, 413, 431, 500, 503}
    conflict = responses[409]
    assert conflict["description"].startswith("- `INVALID_STATE`: ")
    assert "PLUGIN_ALREADY_EXISTS" not in conflict["description"]
    assert set(conflict["content"]["application/json"]["examples"]) == {"INVALID_STATE"}
    example = conflict["content"]["application/json"]["examples"]["INVALID_STATE"]["value"]
    assert example["success"] is False and example["error"]["code"] == "INVALID_STATE"
    assert 401 not in errors_for(token=False)
    with pytest.raises(ValueError, match="not in ERROR_TABLE"):
        errors_for(InvalidResponseError)
