"""Crafted tokens and the write rate limit, against the service's app in-process (issue 11).

One service trusts three kinds of key at once: its own HS256 secret, an identity provider's
RSA public key (MLX_JWT_PUBLIC_KEY, a PEM file) and a JWKS file with an EC and an RSA key
(MLX_JWKS_FILE), with MLX_JWT_ISSUER and MLX_JWT_AUDIENCE set. Every forged, stale or
malformed token answers 401 UNAUTHORIZED in the envelope, grants nothing and is never logged;
the right ones are accepted with exactly their scopes. Keys are made here with cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.conftest import (
    LiveServer,
    assert_error,
    clean_env,
    mlx_cli,
    plugin_body,
    start_inprocess,
)

SECRET = "tokens-test-signing-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789"
ISS = "https://idp.example.test/"
AUD = "mlx-platform-api"
READ_PATH = "/v1/plugins"
WRITE_PATH = "/v1/plugins/validate-composition"
WRITE_BODY = {"plugins": [{"name": "no_such_plugin"}]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign by hand: PyJWT refuses to encode some of the malformed tokens sent here."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def rs256_by_hand(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign by hand: PyJWT refuses to encode a header such as a kid that is not a string."""
    signing_input = f"{b64json({'alg': 'RS256', **header})}.{b64json(claims)}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(sig)}"


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict:
    public = key.public_key()
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algo.to_jwk(public))  # type: ignore[attr-defined]
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey  # MLX_JWT_PUBLIC_KEY (PEM file)
    rsa_jwks: rsa.RSAPrivateKey  # in the JWKS as kid "rsa-1"
    ec: ec.EllipticCurvePrivateKey  # in the JWKS as kid "ec-1"
    stranger: rsa.RSAPrivateKey  # known to no one
    pem_path: Path
    jwks_path: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("idp")
    k = Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_jwks=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        stranger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        pem_path=folder / "idp.pem",
        jwks_path=folder / "jwks.json",
    )
    k.pem_path.write_bytes(pem_of(k.rsa))
    k.jwks_path.write_text(
        json.dumps({"keys": [jwk_of(k.ec, "ec-1", "ES256"), jwk_of(k.rsa_jwks, "rsa-1", "RS256")]})
    )
    return k


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[LiveServer]:
    srv = start_inprocess(
        tmp_path_factory.mktemp("tokens") / "home",
        jwt_secret=SECRET,
        jwt_public_key=str(keys.pem_path),
        jwks_file=str(keys.jwks_path),
        jwt_issuer=ISS,
        jwt_audience=AUD,
        jwt_algorithms="HS256,RS256,ES256",
        seed_builtin_plugins="false",
    )
    yield srv
    srv.stop()


def now() -> int:
    return int(time.time())


def own_claims(**changes: Any) -> dict[str, Any]:
    """The claims of a token from `mlx token create`, changed."""
    claims: dict[str, Any] = {
        "iss": "mlx-platform",
        "sub": "mallory",
        "scopes": ["plugins:read"],
        "iat": now(),
        "exp": now() + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


def idp_claims(**changes: Any) -> dict[str, Any]:
    """The claims of an identity provider's access token, changed."""
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-42@idp",
        "scope": "openid plugins:read",
        "iat": now(),
        "exp": now() + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


DROP = object()  # a claim left out


def own(**changes: Any) -> str:
    return hs256(SECRET.encode(), {"alg": "HS256", "typ": "JWT"}, own_claims(**changes))


def rs256(
    keys: Keys, key: rsa.RSAPrivateKey | None = None, kid: str | None = None, **c: Any
) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(idp_claims(**c), key or keys.rsa, algorithm="RS256", headers=headers)


def es256(keys: Keys, kid: str | None = "ec-1", **c: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(idp_claims(**c), keys.ec, algorithm="ES256", headers=headers)


def with_payload(token: str, claims: dict[str, Any]) -> str:
    """`token` with its payload replaced and its signature kept (an edited token)."""
    header, _, signature = token.split(".")
    return f"{header}.{b64json(claims)}.{signature}"


def get(server: LiveServer, token: str, path: str = READ_PATH) -> httpx.Response:
    return server.anonymous.get(path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def post(server: LiveServer, token: str, path: str, body: object) -> httpx.Response:
    return server.anonymous.post(
        path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


# ------------------------------------------------------------------ the crafted-token matrix

# Each builds a token the service must refuse with 401, from the module's keys.
FORGED: dict[str, Callable[[Keys], str]] = {
    # signatures
    "alg-none": lambda k: f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(own_claims())}.",
    "alg-none-upper": lambda k: f"{b64json({'alg': 'NONE'})}.{b64json(own_claims())}.",
    "hs256-wrong-secret": lambda k: hs256(
        b"another-secret-entirely-0123456789", {"alg": "HS256"}, own_claims()
    ),
    "rs256-wrong-key": lambda k: rs256(k, key=k.stranger),
    "rs256-wrong-key-known-kid": lambda k: rs256(k, key=k.stranger, kid="rsa-1"),
    "es256-signed-by-rsa-kid": lambda k: jwt.encode(
        idp_claims(), k.ec, algorithm="ES256", headers={"kid": "rsa-1"}
    ),
    "key-confusion-hs256-with-public-pem": lambda k: hs256(
        pem_of(k.rsa), {"alg": "HS256", "typ": "JWT"}, idp_claims()
    ),
    "key-confusion-hs256-with-pem-own-claims": lambda k: hs256(
        pem_of(k.rsa), {"alg": "HS256", "typ": "JWT"}, own_claims()
    ),
    "key-confusion-hs256-with-jwks-kid": lambda k: hs256(
        pem_of(k.rsa_jwks), {"alg": "HS256", "kid": "rsa-1"}, idp_claims()
    ),
    "alg-not-allowed-hs512": lambda k: jwt.encode(own_claims(), SECRET, algorithm="HS512"),
    "alg-not-allowed-rs512": lambda k: jwt.encode(idp_claims(), k.rsa, algorithm="RS512"),
    "edited-scopes": lambda k: with_payload(own(), own_claims(scopes=["plugins:admin"])),
    "edited-scopes-idp": lambda k: with_payload(rs256(k), idp_claims(scope="plugins:admin")),
    "truncated-signature": lambda k: rs256(k)[:-10],
    # times
    "expired-own": lambda k: own(iat=now() - 7200, exp=now() - 3600),
    "expired-idp": lambda k: rs256(k, iat=now() - 7200, exp=now() - 3600),
    "not-yet-valid-nbf": lambda k: rs256(k, nbf=now() + 3600),
    "issued-in-the-future": lambda k: own(iat=now() + 3600),
    "no-exp": lambda k: own(exp=DROP),
    "no-iat": lambda k: rs256(k, iat=DROP),
    # issuer and audience
    "wrong-iss": lambda k: rs256(k, iss="https://evil.example.test/"),
    "no-iss": lambda k: rs256(k, iss=DROP),
    "own-token-with-idp-iss": lambda k: own(iss=ISS),
    "wrong-aud": lambda k: rs256(k, aud="some-other-api"),
    "wrong-aud-list": lambda k: es256(k, aud=["a", "b"]),
    "no-aud": lambda k: es256(k, aud=DROP),
    # key ids
    "unknown-kid": lambda k: rs256(k, key=k.rsa_jwks, kid="rsa-99"),
    "kid-not-a-string": lambda k: rs256_by_hand(k.rsa_jwks, {"kid": 1}, idp_claims()),
    "es256-without-kid-several-jwks-keys": lambda k: es256(k, kid=None),
    # size
    "oversize-40kb": lambda k: own(pad="x" * 40_000),
    # subject
    "missing-sub": lambda k: own(sub=DROP),
    "empty-sub": lambda k: own(sub=""),
    "sub-not-a-string": lambda k: own(sub=12345),
    "sub-object": lambda k: own(sub={"admin": True}),
    "sub-with-control-characters": lambda k: own(sub="admin\n2024-01-01 INFO forged line"),
    # claim types, on correctly signed tokens
    "scopes-object": lambda k: own(scopes={"plugins:admin": True}),
    "scopes-int": lambda k: own(scopes=1),
    "scopes-string": lambda k: own(scopes="plugins:admin"),
    "scopes-list-of-objects": lambda k: own(scopes=[{"plugins:admin": True}]),
    "scope-list-not-string": lambda k: rs256(k, scope=["plugins:admin"]),
    "exp-string": lambda k: own(exp=str(now() + 600)),
    "exp-bool": lambda k: own(exp=True),
    "exp-list": lambda k: own(exp=[now() + 600]),
    "exp-object": lambda k: own(exp={"at": now() + 600}),
    "nbf-string": lambda k: own(nbf="0"),
    "iat-string": lambda k: own(iat=str(now())),
    "iss-list": lambda k: own(iss=["mlx-platform"]),
    "aud-int": lambda k: es256(k, aud=1),
    # not JSON where JSON belongs
    "payload-not-json": lambda k: f"{b64json({'alg': 'HS256'})}.{b64(b'not json')}.{b64(b'x')}",
    "payload-a-list": lambda k: hs256(SECRET.encode(), {"alg": "HS256"}, [1, 2]),  # type: ignore[arg-type]
    "header-a-list": lambda k: f"{b64(b'[1]')}.{b64json(own_claims())}.{b64(b'x')}",
}


@pytest.mark.parametrize("case", list(FORGED), ids=list(FORGED))
def test_crafted_token_is_refused_with_401_on_reads_and_writes(
    server: LiveServer, keys: Keys, case: str
) -> None:
    token = FORGED[case](keys)
    assert_error(get(server, token), 401, "UNAUTHORIZED")
    assert_error(post(server, token, WRITE_PATH, WRITE_BODY), 401, "UNAUTHORIZED")
    # nothing of the token comes back (it might be someone's real token)
    r = get(server, token)
    assert token[-40:] not in r.text


def test_a_scopes_object_does_not_grant_admin(server: LiveServer) -> None:
    """The issue's finding: `{"plugins:admin": true}` iterated as a list granted every scope."""
    token = own(sub="mallory", scopes={"plugins:admin": True, "plugins:write": True})
    err = assert_error(
        post(server, token, "/v1/plugins", plugin_body("granted_by_object")), 401, "UNAUTHORIZED"
    )
    assert "'scopes'" in str(err["message"])
    admin = server.client(token=own(sub="admin", scopes=["plugins:admin"]))
    with admin:
        assert admin.get("/v1/plugins/plugin_granted_by_object_001").status_code == 404


def test_wrong_claim_types_name_the_claim(server: LiveServer) -> None:
    for claim, token in [
        ("scopes", own(scopes=1)),
        ("exp", own(exp="9999999999")),
        ("sub", own(sub=DROP)),
    ]:
        err = assert_error(get(server, token), 401, "UNAUTHORIZED")
        assert f"'{claim}'" in str(err["message"]), err


def test_expired_and_unknown_kid_say_why(server: LiveServer, keys: Keys) -> None:
    err = assert_error(
        get(server, rs256(keys, exp=now() - 60, iat=now() - 120)), 401, "UNAUTHORIZED"
    )
    assert "expired" in str(err["message"])
    err = assert_error(
        get(server, rs256(keys, key=keys.rsa_jwks, kid="rsa-99")), 401, "UNAUTHORIZED"
    )
    assert "kid" in str(err["message"])


def test_no_crafted_token_reaches_the_service_log(server: LiveServer, keys: Keys) -> None:
    sent = [FORGED[c](keys) for c in ("edited-scopes", "wrong-aud", "scopes-object")]
    for token in sent:
        get(server, token)
    log = server.log_text()
    for token in sent:
        assert token.split(".")[2][:20] not in log
    assert "Traceback" not in log


# ------------------------------------------------------------------ tokens that are accepted


def test_own_hs256_token_from_mlx_token_create_still_works(server: LiveServer) -> None:
    token = server.token("plugins:read", subject="cli-user")
    assert get(server, token).status_code == 200
    assert_error(post(server, token, WRITE_PATH, WRITE_BODY), 403, "FORBIDDEN")


def test_rs256_token_from_the_pem_key_is_accepted_with_its_scopes(
    server: LiveServer, keys: Keys
) -> None:
    reader = rs256(keys)  # scope "openid plugins:read", no kid: MLX_JWT_PUBLIC_KEY
    assert get(server, reader).status_code == 200
    err = assert_error(post(server, reader, WRITE_PATH, WRITE_BODY), 403, "FORBIDDEN")
    assert err["details"]["required_scope"] == "plugins:write"  # type: ignore[index]
    writer = rs256(keys, scope="plugins:write")
    r = post(server, writer, WRITE_PATH, WRITE_BODY)
    assert r.status_code == 200, r.text


def test_rs256_admin_token_from_the_pem_key_registers_and_deletes(
    server: LiveServer, keys: Keys
) -> None:
    admin = rs256(keys, sub="ops@idp", scope=DROP, scopes=["plugins:admin"])
    r = post(server, admin, "/v1/plugins", plugin_body("idp_registered"))
    assert r.status_code == 201, r.text
    plugin_id = r.json()["data"]["id"]
    r = server.anonymous.delete(
        f"/v1/plugins/{plugin_id}", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert r.status_code == 200, r.text


def test_es256_token_from_the_jwks_file_is_accepted_with_its_scopes(
    server: LiveServer, keys: Keys
) -> None:
    reader = es256(keys)
    assert get(server, reader).status_code == 200
    assert_error(post(server, reader, WRITE_PATH, WRITE_BODY), 403, "FORBIDDEN")
    writer = es256(keys, scope="plugins:write")
    assert post(server, writer, WRITE_PATH, WRITE_BODY).status_code == 200


def test_rs256_token_from_the_jwks_file_is_accepted(server: LiveServer, keys: Keys) -> None:
    token = rs256(keys, key=keys.rsa_jwks, kid="rsa-1", aud=["other-api", AUD])
    assert get(server, token).status_code == 200


def test_a_rotated_jwks_file_is_read_again_without_a_restart(tmp_path: Path, keys: Keys) -> None:
    jwks = tmp_path / "rotating.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys.ec, "ec-1", "ES256")]}))
    srv = start_inprocess(
        tmp_path / "home",
        jwks_file=str(jwks),
        jwt_issuer=ISS,
        jwt_audience=AUD,
        seed_builtin_plugins="false",
    )
    try:
        new_key = ec.generate_private_key(ec.SECP256R1())
        rotated = jwt.encode(idp_claims(), new_key, "ES256", headers={"kid": "ec-2"})
        assert_error(get(srv, rotated), 401, "UNAUTHORIZED")
        assert get(srv, es256(keys)).status_code == 200  # one key: kid "ec-1"
        jwks.write_text(json.dumps({"keys": [jwk_of(new_key, "ec-2", "ES256")]}))
        assert get(srv, rotated).status_code == 200
        assert_error(get(srv, es256(keys)), 401, "UNAUTHORIZED")  # the old key is gone
        jwks.write_text('{"keys": [')  # half written: the last good keys stay
        assert get(srv, rotated).status_code == 200
    finally:
        srv.stop()


# ------------------------------------------------------------------ settings refused at start


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("MLX_JWT_ALGORITHMS", "HS256,none", "none"),
        ("MLX_JWT_ALGORITHMS", "HS256,XS999", "unknown algorithm"),
        ("MLX_JWT_PUBLIC_KEY", "/no/such/key.pem", "cannot read"),
        ("MLX_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnot a key\n", "not a PEM"),
        ("MLX_WRITE_RATE_LIMIT", "lots", "N/minute"),
        ("MLX_WRITE_RATE_LIMIT", "0/minute", "N/minute"),
    ],
)
def test_a_bad_token_setting_stops_the_command_with_its_name(
    tmp_path: Path, setting: str, value: str, says: str
) -> None:
    env = clean_env(MLX_HOME=str(tmp_path / "home"), **{setting: value})
    done = mlx_cli(
        "token", "create", "--subject", "x", "--scope", "plugins:read", env=env, check=False
    )
    assert done.returncode == 2, done
    assert setting in done.stderr and says in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_jwks_file_with_a_symmetric_or_private_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.stranger))  # has "d"
    for name, entry in [
        ("oct", {"kty": "oct", "k": b64(SECRET.encode()), "kid": "s"}),
        ("private", {**private, "kid": "p"}),
    ]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"keys": [entry]}))
        env = clean_env(MLX_HOME=str(tmp_path / "home"), MLX_JWKS_FILE=str(path))
        done = mlx_cli(
            "token", "create", "--subject", "x", "--scope", "plugins:read", env=env, check=False
        )
        assert done.returncode == 2, done
        assert "public keys only" in done.stderr, done.stderr
        assert b64(SECRET.encode()) not in done.stderr
        assert private["d"][:20] not in done.stderr


# ------------------------------------------------------------------ rate limit on writes


class Clock:
    """A monotonic clock that moves only when told (`advance`)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[LiveServer]:
    srv = start_inprocess(
        tmp_path_factory.mktemp("limited") / "home",
        jwt_secret=SECRET,
        write_rate_limit="2/5s",
        seed_builtin_plugins="false",
    )
    # the service's write rate limiter (made at the first request) on the clock of the test
    assert get(srv, own(sub="nobody")).status_code == 200
    srv.app.state.auth_guards.limiter.clock = clock
    yield srv
    srv.stop()


def test_writes_over_the_limit_answer_429_with_retry_after_then_pass_again(
    limited: LiveServer, clock: Clock
) -> None:
    alice = own(sub="alice", scopes=["plugins:admin"])
    bob = own(sub="bob", scopes=["plugins:admin"])
    answers = [post(limited, alice, WRITE_PATH, WRITE_BODY) for _ in range(2)]
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    r = post(limited, alice, "/v1/plugins", plugin_body("rate_limited_probe"))
    err = assert_error(r, 429, "RATE_LIMITED")
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 3  # one write back every 2.5 s, rounded up to whole seconds
    assert err["details"] == {"limit": "2/5s", "retry_after": retry_after, "subject": "alice"}
    # the refused write changed nothing; reads are not limited; another subject is not limited
    assert get(limited, alice, "/v1/plugins/plugin_rate_limited_probe_001").status_code == 404
    assert post(limited, bob, WRITE_PATH, WRITE_BODY).status_code == 200
    # still refused while no time passes; once what Retry-After said has passed (on the
    # limiter's clock, here the test's), alice may write again
    assert_error(post(limited, alice, WRITE_PATH, WRITE_BODY), 429, "RATE_LIMITED")
    clock.advance(retry_after)
    assert post(limited, alice, WRITE_PATH, WRITE_BODY).status_code == 200


def test_every_write_method_counts_and_reads_and_invocations_never_do(limited: LiveServer) -> None:
    carol = own(sub="carol", scopes=["plugins:admin"])
    with limited.client(token=carol) as c:
        for _ in range(20):
            assert c.get("/v1/plugins").status_code == 200
        for _ in range(5):  # invocations are the data plane, not writes: never limited
            r = c.post("/v1/plugins/plugin_missing_001/invoke", json={"operation": "echo"})
            assert r.status_code == 404, r.text
        assert c.delete("/v1/plugins/plugin_missing_001").status_code == 404
        assert (
            c.patch(
                "/v1/plugins/plugin_missing_001/configuration", json={"configuration": {}}
            ).status_code
            == 404
        )
        r = c.post("/v1/plugins/plugin_missing_001/activate", json={})
        err = assert_error(r, 429, "RATE_LIMITED")
        assert r.headers["Retry-After"] == str(err["details"]["retry_after"])  # type: ignore[index]


def test_the_sdk_sees_rate_limited_error(limited: LiveServer) -> None:
    from mlx_platform import MLXClient
    from mlx_platform.errors import RateLimitedError

    client = MLXClient(
        base_url=limited.url,
        api_token=own(sub="dave", scopes=["plugins:admin"]),
        http_client=limited.anonymous,  # the SDK's requests to the in-process service
    )
    with client:
        for _ in range(2):
            client.plugins.validate_composition([{"name": "x"}])
        with pytest.raises(RateLimitedError) as caught:
            client.plugins.validate_composition([{"name": "x"}])
    assert caught.value.status_code == 429
    assert caught.value.details["retry_after"] in (1, 2, 3)
