"""FastAPI dependencies: the core of this process and the caller's checked identity."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlx_platform.core.context import Core
from mlx_platform.errors import UnauthorizedError
from mlx_platform.server.auth import (
    WRITE_METHODS,
    Principal,
    TokenVerifier,
    WriteRateLimiter,
    require,
)

_bearer = HTTPBearer(auto_error=False, description="A JWT from `mlx token create`")


# The dependencies are coroutines: FastAPI runs a plain function dependency on a worker
# thread (a round trip through the thread pool for each, on every request), and none of these
# waits for anything (a token is verified in memory, a few microseconds once it is cached).


async def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


@dataclass(frozen=True)
class _Guards:
    verifier: TokenVerifier
    limiter: WriteRateLimiter | None


_guards_lock = threading.Lock()


def _guards(request: Request) -> _Guards:
    return guards_of(request.app.state)


def guards_of(state: Any) -> _Guards:
    """This app's token verifier and write rate limiter, made once from its settings (the
    read cache in front of the routes checks tokens with the same verifier)."""
    guards: _Guards | None = getattr(state, "auth_guards", None)
    if guards is None:
        with _guards_lock:
            guards = getattr(state, "auth_guards", None)
            if guards is None:
                settings = state.core.settings
                rate = settings.write_rate
                guards = _Guards(
                    TokenVerifier.from_settings(settings),
                    WriteRateLimiter(rate[0], rate[1], text=settings.write_rate_limit)
                    if rate
                    else None,
                )
                state.auth_guards = guards
    return guards


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise UnauthorizedError("Authentication required: send 'Authorization: Bearer <token>'")
    return _guards(request).verifier.verify(credentials.credentials)


def _is_write(request: Request) -> bool:
    """Counted by MLX_WRITE_RATE_LIMIT: POST, PUT, PATCH, DELETE, except invocations (the
    data plane, bounded by MLX_CALLS_PER_PLUGIN and their timeouts, not a change of state)."""
    if request.method not in WRITE_METHODS:
        return False
    template = str(getattr(request.scope.get("route"), "path", ""))
    return not template.endswith("/invoke")


def scope(name: str) -> Callable[..., Awaitable[Principal]]:
    async def checker(
        request: Request, principal: Annotated[Principal, Depends(get_principal)]
    ) -> Principal:
        require(principal, name)
        limiter = _guards(request).limiter
        if limiter is not None and _is_write(request):
            limiter.take(principal.subject)  # 429 RATE_LIMITED with Retry-After
        return principal

    checker.__name__ = f"require_{name.replace(':', '_')}"
    checker.required_scope = name  # type: ignore[attr-defined]
    return checker


def required_scope(route: object) -> str | None:
    """The scope a route's dependencies ask for (None: the route needs no token)."""
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "required_scope", None)
        if found:
            return str(found)
        stack.extend(dep.dependencies)
    return None


def authorize(request: Request, route: object) -> None:
    """Check the request's token against the route's scope (raises 401/403)."""
    name = required_scope(route)
    if name is None:
        return
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise UnauthorizedError("Authentication required: send 'Authorization: Bearer <token>'")
    require(_guards(request).verifier.verify(token), name)


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


Reader = Annotated[Principal, Depends(scope("plugins:read"))]
Writer = Annotated[Principal, Depends(scope("plugins:write"))]
Admin = Annotated[Principal, Depends(scope("plugins:admin"))]


def holds_scope(scope: Any, headers: dict[bytes, bytes], name: str) -> bool:
    """Whether the bearer token of an ASGI request (`headers`: its headers by name) is valid
    and carries the scope `name`: for the service's layers in front of the routes, which
    answer only such requests and leave every other to the route (and its 401/403)."""
    token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    if token is None:
        return False
    try:
        principal = guards_of(scope["app"].state).verifier.verify(token)
    except Exception:  # noqa: BLE001 - the route answers it, in the envelope
        return False
    return principal.has(name)
