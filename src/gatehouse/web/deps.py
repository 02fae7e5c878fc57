"""Request dependencies: the flow context and the bearer token.

FastAPI runs a plain `def` dependency on a worker thread; these are `async def` so that reading
an attribute does not cost two thread hand-offs per request (the hot path's largest overhead)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gatehouse.bootstrap import Services
from gatehouse.errors import InvalidToken
from gatehouse.selfservice.context import FlowContext


def services_of(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


async def services(request: Request) -> Services:
    return services_of(request)


async def ctx(request: Request) -> FlowContext:
    return services_of(request).ctx


async def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Missing or malformed bearer token")
    return token.strip()


Ctx = Annotated[FlowContext, Depends(ctx)]
Token = Annotated[str, Depends(bearer_token)]
