"""FastAPI dependencies: the core of this process and the caller's checked identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlx_platform.core.context import Core
from mlx_platform.errors import UnauthorizedError
from mlx_platform.server.auth import Principal, require, verify_token

_bearer = HTTPBearer(auto_error=False, description="A JWT from `mlx token create`")


def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise UnauthorizedError("Authentication required: send 'Authorization: Bearer <token>'")
    core: Core = request.app.state.core
    return verify_token(core.settings.resolved_jwt_secret, credentials.credentials)


def scope(name: str) -> Callable[..., Principal]:
    def checker(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        require(principal, name)
        return principal

    checker.__name__ = f"require_{name.replace(':', '_')}"
    return checker


Reader = Annotated[Principal, Depends(scope("plugins:read"))]
Writer = Annotated[Principal, Depends(scope("plugins:write"))]
Admin = Annotated[Principal, Depends(scope("plugins:admin"))]
