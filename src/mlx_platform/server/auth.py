"""JWT bearer tokens (HS256) with scopes. admin includes write, write includes read."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from mlx_platform.errors import ForbiddenError, UnauthorizedError

ISSUER = "mlx-platform"
SCOPES = ("plugins:read", "plugins:write", "plugins:admin")
_IMPLIES = {
    "plugins:admin": {"plugins:admin", "plugins:write", "plugins:read"},
    "plugins:write": {"plugins:write", "plugins:read"},
    "plugins:read": {"plugins:read"},
}


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


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError(
            "The token has expired: create a new one with `mlx token create`"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise UnauthorizedError(f"The token is not valid: {exc}") from None
    raw = claims.get("scopes", claims.get("scope", []))
    scopes = raw.split() if isinstance(raw, str) else list(raw)
    return Principal(subject=str(claims["sub"]), scopes=frozenset(str(s) for s in scopes))


def require(principal: Principal, scope: str) -> None:
    if not principal.has(scope):
        raise ForbiddenError(
            f"This token lacks the scope '{scope}'",
            {"required_scope": scope, "token_scopes": sorted(principal.scopes)},
        )
