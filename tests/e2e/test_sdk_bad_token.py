"""An API token that cannot be sent in a header is refused when `MLXClient` or
`AsyncMLXClient` is built, with `MLXConfigurationError` naming the problem and never quoting
the token: a non-ASCII character ended the first call in httpx's UnicodeEncodeError, and a
line break in an error quoting the header, token and all. Spaces around a token (a line break
read with it from a file) are not part of it."""

from __future__ import annotations

import asyncio

import pytest

from mlx_platform import MLXClient, MLXConfigurationError
from mlx_platform.async_client import AsyncMLXClient
from tests.conftest import LiveServer

CLIENTS = [MLXClient, AsyncMLXClient]
# name: (token, what the error says); every token holds the word SECRET, never to be shown
BAD_TOKENS = {
    "non_ascii": ("eyJ.SECRET-tökén", "holds a non-ASCII character"),
    "line_break": ("eyJ.SECRET\nX-Injected: 1", "holds a line break"),
    "carriage_return": ("eyJ.SECRET\rmore", "holds a line break"),
    "space_inside": ("eyJ.SECRET more", "holds a space"),
    "control_character": ("eyJ.SECRET\x07more", "holds a control character"),
    "other_character": ("eyJ.SECRET,more", "holds a character no token holds"),
}


def assert_refused(exc: MLXConfigurationError, says: str) -> None:
    assert isinstance(exc, ValueError)  # as every configuration error
    for shown in (str(exc), repr(exc), exc.message, *map(str, exc.args)):
        assert "SECRET" not in shown and "more" not in shown, shown
    assert str(exc).startswith(f"the API token (api_token=... or MLX_API_TOKEN) {says}: "), exc
    assert exc.__cause__ is None and exc.__context__ is None


@pytest.mark.parametrize("client_class", CLIENTS, ids=["sync", "async"])
@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_a_token_that_cannot_be_sent_is_refused_at_construction(
    client_class: type[MLXClient] | type[AsyncMLXClient],
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token, says = BAD_TOKENS[case]
    monkeypatch.delenv("MLX_API_TOKEN", raising=False)
    with pytest.raises(MLXConfigurationError) as given:
        client_class(api_token=token, base_url="http://127.0.0.1:1")
    assert_refused(given.value, says)
    monkeypatch.setenv("MLX_API_TOKEN", token)
    with pytest.raises(MLXConfigurationError) as from_env:
        client_class(base_url="http://127.0.0.1:1")
    assert_refused(from_env.value, says)


def test_a_token_with_a_line_break_around_it_is_sent_without_it(
    process_live_server: LiveServer,
) -> None:
    server = process_live_server
    read_from_a_file = server.token("plugins:read") + "\n"
    with MLXClient(api_token=read_from_a_file, base_url=server.url) as client:
        assert client.plugins.list().pagination.total >= 3

    async def call() -> int:
        async with AsyncMLXClient(api_token=f"  {read_from_a_file}", base_url=server.url) as c:
            return (await c.plugins.list()).pagination.total

    assert asyncio.run(call()) >= 3
