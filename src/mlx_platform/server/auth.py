"""JWT bearer tokens with scopes (admin includes write, write includes read), and the rate
limit on writes.

Two kinds of token are accepted, each checked with its own keys only:
- the service's own (`mlx token create`): HS256 with MLX_JWT_SECRET, issuer "mlx-platform";
- an identity provider's: RS*, PS*, ES* or EdDSA, verified with MLX_JWT_PUBLIC_KEY or the key
  of MLX_JWKS_FILE its `kid` names, with `iss`/`aud` checked when MLX_JWT_ISSUER/AUDIENCE
  are set.
The token's `alg` must be in MLX_JWT_ALGORITHMS ('none' never is) and picks the kind of key:
an HS token is never checked against a public key, nor an RS/ES token against the secret, so
a token "signed" with the public key as an HMAC secret is refused (key confusion).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from mlx_platform.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from mlx_platform.jwt_keys import (
    HMAC_ALGORITHMS,
    JwksKey,
    PublicKey,
    ReloadingFile,
    is_pem_text,
    key_fits,
    load_jwks,
    load_public_key,
)

ISSUER = "mlx-platform"
SCOPES = ("plugins:read", "plugins:write", "plugins:admin")
_IMPLIES = {
    "plugins:admin": {"plugins:admin", "plugins:write", "plugins:read"},
    "plugins:write": {"plugins:write", "plugins:read"},
    "plugins:read": {"plugins:read"},
}
# Longer tokens are refused unread: identity providers' tokens are 1-4 KB, and 8 KB is the
# header line nginx passes by default.
MAX_TOKEN_CHARS = 8192
MAX_SUBJECT_CHARS = 256
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PERIOD_NAMES = {1.0: "second", 60.0: "minute", 3600.0: "hour"}


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return any(scope in _IMPLIES.get(s, {s}) for s in self.scopes)


def create_token(secret: str, subject: str, scopes: list[str], ttl_seconds: int) -> str:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "scopes": sorted(set(scopes)),
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _invalid(reason: str) -> UnauthorizedError:
    return UnauthorizedError(f"The token is not valid: {reason}")


# The time claims (RFC 7519 4.1.4-6), as a refusal names them.
_TIME_CLAIMS = {"exp": "expiry", "nbf": "start of validity", "iat": "issue time"}


def _is_number(value: object) -> bool:
    """A JSON number a float holds: not a bool, not inf or nan, and not an integer beyond a
    float's range (JSON allows any number of digits: `"exp": 1000...0` of 400 digits is
    valid JSON, and `float()` of it raises OverflowError, which answered 500)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def check_claim_types(claims: dict[str, Any]) -> frozenset[str]:
    """Refuse claims of the wrong JSON type (RFC 7519 4.1) and return the scopes.

    PyJWT converts what it can (`int("9999999999")`, `int(True)`) and ignores the claims it
    does not know, such as the scopes; a claim of the wrong type is refused here instead."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise _invalid("its 'sub' claim must be a non-empty string")
    if len(sub) > MAX_SUBJECT_CHARS or not sub.isprintable():
        raise _invalid(f"its 'sub' claim must be printable, at most {MAX_SUBJECT_CHARS} characters")
    for name, what in _TIME_CLAIMS.items():
        if name in claims and not _is_number(claims[name]):
            raise _invalid(
                f"its {what} ('{name}' claim) is invalid: it must be a number of seconds since "
                "the epoch, within a float's range (about 1.8e308)"
            )
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise _invalid("its 'iss' claim must be a string")
    if "aud" in claims and not (isinstance(claims["aud"], str) or _is_string_list(claims["aud"])):
        raise _invalid("its 'aud' claim must be a string or a list of strings")
    scopes: set[str] = set()
    if "scopes" in claims:
        if not _is_string_list(claims["scopes"]):
            raise _invalid("its 'scopes' claim must be a list of strings")
        scopes.update(claims["scopes"])
    if "scope" in claims:  # RFC 8693 / RFC 9068: one space-separated string
        if not isinstance(claims["scope"], str):
            raise _invalid("its 'scope' claim must be a space-separated string")
        scopes.update(claims["scope"].split())
    return frozenset(scopes)


class TokenVerifier:
    """Verifies bearer tokens with the keys the settings name (module docstring)."""

    def __init__(
        self,
        *,
        secret: str | None,
        algorithms: tuple[str, ...] = ("HS256",),
        public_key: str | None = None,
        jwks_file: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        self.secret = secret
        self.algorithms = frozenset(algorithms)
        self.issuer = issuer
        self.audience = audience
        self._pem_key: PublicKey | None = None
        self._pem_file: ReloadingFile[PublicKey] | None = None
        if public_key:
            if is_pem_text(public_key):
                self._pem_key = load_public_key(public_key)
            else:
                path = Path(public_key).expanduser()
                self._pem_file = ReloadingFile(path, lambda p: load_public_key(str(p)))
        self._jwks = ReloadingFile(jwks_file, load_jwks) if jwks_file else None
        # Tokens verified already: the token's text -> (principal, until when it stands).
        self._verified: dict[str, tuple[Principal, float]] = {}

    # A verified token is trusted again without checking its signature and claims (~40 us
    # of PyJWT and key work a request, more than the bare framework's whole request) until
    # its `exp`, but never longer than CACHE_SECONDS: a public key removed from MLX_JWKS_FILE
    # or MLX_JWT_PUBLIC_KEY stops its tokens within that time. At most CACHE_ENTRIES tokens
    # are kept; the oldest go first. Failures are not kept: each is checked and answered
    # with its own reason.
    CACHE_SECONDS = 60.0
    CACHE_ENTRIES = 4096

    @classmethod
    def from_settings(cls, settings: Any) -> TokenVerifier:
        algorithms = tuple(settings.jwt_algorithm_list)
        return cls(
            # the secret is made (or read from MLX_HOME) only when HS tokens are accepted
            secret=settings.resolved_jwt_secret if HMAC_ALGORITHMS & set(algorithms) else None,
            algorithms=algorithms,
            public_key=settings.jwt_public_key,
            jwks_file=settings.jwks_file,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def _public_key(self, algorithm: str, kid: object) -> PublicKey:
        pem = self._pem_key if self._pem_file is None else self._pem_file.get()
        jwks: dict[str | None, JwksKey] = (self._jwks.get() if self._jwks else None) or {}
        if pem is None and not jwks:
            raise _invalid(
                f"{algorithm} tokens need MLX_JWT_PUBLIC_KEY or MLX_JWKS_FILE, and neither is set"
            )
        entry: JwksKey | None
        if kid is not None and jwks:
            entry = jwks.get(kid) if isinstance(kid, str) else None
            if entry is None:
                raise _invalid("its key id (kid) is not one of MLX_JWKS_FILE")
        elif pem is not None:
            if not key_fits(algorithm, pem):
                raise _invalid(f"{algorithm} does not fit the kind of MLX_JWT_PUBLIC_KEY")
            return pem
        elif len(jwks) == 1:
            entry = next(iter(jwks.values()))
        else:
            raise _invalid("it names no key id (kid), and MLX_JWKS_FILE has several keys")
        if (entry.algorithm and entry.algorithm != algorithm) or not key_fits(algorithm, entry.key):
            raise _invalid(f"{algorithm} is not the algorithm of the key its kid names")
        return entry.key

    def verify(self, token: str) -> Principal:
        """The token's principal, or UnauthorizedError saying why it is not valid."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            self._verified.pop(token, None)
        principal, exp = self._verify(token)
        if len(self._verified) >= self.CACHE_ENTRIES:
            # dicts keep insertion order: the oldest entry goes (a race between threads
            # may drop one more, never keep a wrong one)
            try:
                del self._verified[next(iter(self._verified))]
            except (KeyError, StopIteration, RuntimeError):
                pass
        self._verified[token] = (principal, min(exp, now + self.CACHE_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid(f"it is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise UnauthorizedError(
                "The token is not valid: its algorithm (alg) is not one this service accepts",
                {"accepted_algorithms": sorted(self.algorithms)},
            )
        check_claim_types(unverified)  # before PyJWT converts them (see check_claim_types)
        required = ["exp", "iat", "sub"]
        key: Any
        issuer: str | None
        audience: str | None
        if algorithm in HMAC_ALGORITHMS:
            if not self.secret:
                raise _invalid("HMAC tokens are not accepted here")
            key, issuer, audience = self.secret, ISSUER, None
            required.append("iss")
        else:
            key = self._public_key(algorithm, header.get("kid"))
            issuer, audience = self.issuer, self.audience
            required += [name for name, v in (("iss", issuer), ("aud", audience)) if v]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=issuer,
                audience=audience,
                options={"require": required, "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError(
                "The token has expired: get a new one (`mlx token create`)"
            ) from None
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from None
        scopes = check_claim_types(claims)  # the same bytes as checked before, now verified
        return Principal(subject=claims["sub"], scopes=scopes), float(claims["exp"])


def verify_token(secret: str, token: str) -> Principal:
    """Verify one of the service's own tokens (HS256 with `secret`)."""
    return TokenVerifier(secret=secret).verify(token)


def require(principal: Principal, scope: str) -> None:
    if not principal.has(scope):
        raise ForbiddenError(
            f"This token lacks the scope '{scope}'",
            {"required_scope": scope, "token_scopes": sorted(principal.scopes)},
        )


class WriteRateLimiter:
    """A token bucket per subject: `limit` writes at once, refilled at `limit` per `period`.

    Written here rather than taken from a library: the ones for Starlette (slowapi, ...) key
    on the client address before the token is read, and this is twenty lines."""

    MAX_SUBJECTS = 10_000  # beyond this, full (idle) buckets are dropped

    def __init__(
        self, limit: int, period: float, text: str | None = None, clock: Any = time.monotonic
    ) -> None:
        self.limit = limit
        self.period = period
        self.rate = limit / period
        self.clock = clock
        self.text = text or f"{limit}/{_PERIOD_NAMES.get(period, f'{period:g}s')}"
        self._buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, subject: str) -> None:
        """Spend one write of `subject`, or raise RateLimitedError with the wait."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(subject, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[subject] = (tokens - 1.0, now)
                if len(self._buckets) > self.MAX_SUBJECTS:
                    self._forget_idle(now)
                return
            self._buckets[subject] = (tokens, now)
        retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
        raise RateLimitedError(
            f"Too many writes by '{subject}': at most {self.text}; retry in {retry_after} s",
            {"limit": self.text, "retry_after": retry_after, "subject": subject},
        )

    def _forget_idle(self, now: float) -> None:
        full = [
            s for s, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.limit
        ]
        for s in full:
            del self._buckets[s]
