"""The verified-token cache of `TokenVerifier` (issue 13): a token is checked once, then
trusted until its `exp` or the cache's bound, whichever comes first; failures are never
kept."""

from __future__ import annotations

import time

import jwt
import pytest

from mlx_platform.errors import UnauthorizedError
from mlx_platform.server.auth import ISSUER, TokenVerifier, create_token
from tests.conftest import poll

SECRET = "a-secret-for-the-token-cache-tests-only"


def counting(verifier: TokenVerifier) -> list[str]:
    """The tokens whose signature and claims `verifier` checks (the cache's misses)."""
    checked: list[str] = []
    inner = verifier._verify

    def spy(token: str) -> object:
        checked.append(token)
        return inner(token)

    verifier._verify = spy  # type: ignore[method-assign]
    return checked


def test_a_token_is_checked_once_then_answered_from_the_cache() -> None:
    verifier = TokenVerifier(secret=SECRET)
    checked = counting(verifier)
    token = create_token(SECRET, "alice", ["plugins:read"], 3600)
    first = verifier.verify(token)
    assert verifier.verify(token) == first and first.subject == "alice"
    assert checked == [token]


def test_a_cached_token_stands_no_longer_than_its_exp() -> None:
    verifier = TokenVerifier(secret=SECRET)
    now = int(time.time())
    claims = {"sub": "bob", "scopes": ["plugins:read"], "iat": now, "exp": now + 1, "iss": ISSUER}
    token = jwt.encode(claims, SECRET, "HS256")
    verifier.verify(token)
    assert verifier._verified[token][1] <= now + 1  # kept until exp at the most

    def answer() -> str:
        try:
            verifier.verify(token)
        except UnauthorizedError as exc:
            return str(exc)
        return "accepted"

    # once the token's second has passed, it is checked again, and refused
    refusal = poll(answer, lambda a: a != "accepted", timeout=10, what="the token refused")
    assert "expired" in refusal


def test_the_cache_keeps_a_token_at_most_cache_seconds() -> None:
    verifier = TokenVerifier(secret=SECRET)
    verifier.CACHE_SECONDS = 5.0
    token = create_token(SECRET, "carol", ["plugins:read"], 3600)
    before = time.time()
    verifier.verify(token)
    assert verifier._verified[token][1] <= time.time() + 5.0
    assert verifier._verified[token][1] >= before + 5.0 - 1


def test_failures_are_not_kept_and_each_says_why() -> None:
    verifier = TokenVerifier(secret=SECRET)
    checked = counting(verifier)
    forged = create_token("another-secret-entirely-xxxxxxxxxx", "eve", ["plugins:admin"], 3600)
    for _ in range(2):
        with pytest.raises(UnauthorizedError, match="not valid"):
            verifier.verify(forged)
    assert checked == [forged, forged] and forged not in verifier._verified


def test_the_cache_holds_at_most_cache_entries_tokens() -> None:
    verifier = TokenVerifier(secret=SECRET)
    verifier.CACHE_ENTRIES = 3
    tokens = [create_token(SECRET, f"user{i}", ["plugins:read"], 3600) for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]  # the oldest went first
