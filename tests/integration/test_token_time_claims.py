"""A token whose time claims (exp, nbf, iat) are no usable time, correctly signed with the
service's own secret or by an identity provider's key, is refused with 401 in the envelope
naming the claim, never a 500: an integer beyond a float's range (JSON numbers have any
number of digits) answered every request of such a token with 500 (OverflowError).

Against `mlx serve` over real HTTP, tokens signed with PyJWT."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import LiveServer, assert_error

SECRET = "time-claims-test-signing-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISSUER = "https://idp.example.test/"
HUGE = 10**400  # valid JSON, beyond a float's range

# What each claim is called in the refusal.
CLAIM_WORDS = {"exp": "expiry", "nbf": "start of validity", "iat": "issue time"}
UNUSABLE = {
    "beyond-a-float": HUGE,
    "below-a-float": -HUGE,
    "infinity": float("inf"),  # PyJWT writes it as Infinity, which Python's JSON reads
    "a-string": "tomorrow",
}


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def server(
    process_server_factory: Callable[..., LiveServer], idp_key: rsa.RSAPrivateKey, tmp_path: Path
) -> LiveServer:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        idp_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return process_server_factory(
        jwt_secret=SECRET,
        jwt_public_key=str(pem),
        jwt_issuer=ISSUER,
        jwt_algorithms="HS256,RS256",
        seed_builtin_plugins="false",
    )


def own_token(**claims: Any) -> str:
    now = int(time.time())
    base = {"iss": "mlx-platform", "sub": "ops", "scopes": ["plugins:read"], "iat": now}
    return jwt.encode({**base, "exp": now + 600, **claims}, SECRET, algorithm="HS256")


def idp_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "user@idp", "scope": "plugins:read", "iat": now}
    return jwt.encode({**base, "exp": now + 600, **claims}, key, algorithm="RS256")


@pytest.mark.parametrize("claim", list(CLAIM_WORDS))
def test_a_time_claim_that_is_no_usable_time_is_refused_with_401(
    server: LiveServer, idp_key: rsa.RSAPrivateKey, claim: str
) -> None:
    with server.client(token="") as client:
        # both kinds of token work when their claims are sound
        for good in (own_token(), idp_token(idp_key)):
            r = client.get("/v1/plugins", headers={"Authorization": f"Bearer {good}"})
            assert r.status_code == 200, r.text
        for label, value in UNUSABLE.items():
            for kind, token in (
                ("own", own_token(**{claim: value})),
                ("idp", idp_token(idp_key, **{claim: value})),
            ):
                r = client.get("/v1/plugins", headers={"Authorization": f"Bearer {token}"})
                err = assert_error(r, 401, "UNAUTHORIZED")
                message = str(err["message"])
                assert f"its {CLAIM_WORDS[claim]} ('{claim}' claim) is invalid" in message, (
                    label,
                    kind,
                    message,
                )
    log = server.log_text()
    assert "Traceback" not in log and "OverflowError" not in log, log
    assert " 500 " not in log, log
