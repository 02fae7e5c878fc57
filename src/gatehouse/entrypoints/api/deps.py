"""Request dependencies: the flow context and the bearer token."""

from __future__ import annotations

from fastapi import Request

from gatehouse.bootstrap import Services
from gatehouse.errors import InvalidToken
from gatehouse.flows.context import FlowContext


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def ctx(request: Request) -> FlowContext:
    return services(request).ctx


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Missing or malformed bearer token")
    return token.strip()
