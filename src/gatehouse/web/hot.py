"""The three hottest routes, answered before FastAPI's router: reading the profile, refreshing
a session and verifying a sign-up code.

Each is little more than one database round trip, and FastAPI's routing, dependency solving and
response handling cost as much CPU as the rest of the request (issue 6's profile). Here a
request that is plainly well formed (a JSON object that the route's own schema accepts) runs
the same flow with the same guard, the same envelope and the same error table. Anything else
(another content type, JSON that is not an object, fields the schema refuses) goes on to FastAPI
untouched, its body replayed, so every error a client can provoke is FastAPI's answer as before;
the routes stay declared there too, for the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.errors import GatehouseError
from gatehouse.selfservice.profile import http as profile
from gatehouse.selfservice.registration import http as registration
from gatehouse.selfservice.registration.schemas import VerifyOtpIn
from gatehouse.selfservice.sessions import http as sessions
from gatehouse.selfservice.sessions.schemas import RefreshIn
from gatehouse.web import errors
from gatehouse.web.deps import bearer_token, services_of
from gatehouse.web.responses import JSON

Handler = Callable[[Request, Any], Awaitable[JSON]]


# The endpoints themselves (auth.py), called with what FastAPI would have given them.
async def _profile(request: Request, _body: None) -> JSON:
    return await profile.read_profile(services_of(request).ctx, await bearer_token(request))


async def _refresh(request: Request, body: RefreshIn) -> JSON:
    return await sessions.refresh(body, services_of(request).ctx, request)


async def _verify(request: Request, body: VerifyOtpIn) -> JSON:
    return await registration.verify_otp(body, services_of(request).ctx, request)


# (method, path) -> (the body's schema, or None for no body; the handler).
ROUTES: dict[tuple[str, str], tuple[type[BaseModel] | None, Handler]] = {
    ("GET", "/api/auth/profile"): (None, _profile),
    ("POST", "/api/auth/refresh"): (RefreshIn, _refresh),
    ("POST", "/api/auth/verify-otp"): (VerifyOtpIn, _verify),
}


class HotRoutes:
    """ASGI middleware in front of the FastAPI router (inside the security headers, the body
    limit and CORS, which apply to these answers as to every other)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        schema, handler = route
        body: BaseModel | None = None
        if schema is not None:
            raw, complete = await _read_body(receive)
            if not complete:
                return  # the client left: nobody to answer
            body = _well_formed(scope, raw, schema)
            if body is None:  # FastAPI's answer, errors included, on the same bytes
                await self.app(scope, _replay(raw, receive), send)
                return
        request = Request(scope, receive)
        try:
            response = await handler(request, body)
        except GatehouseError as exc:
            response = await errors.on_gatehouse_error(request, exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, and whether all of it came (not when the client left first)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _well_formed(scope: Scope, raw: bytes, schema: type[BaseModel]) -> BaseModel | None:
    """The body as `schema`, if it is a JSON object (sent as JSON) that the schema accepts."""
    if not _json_content(scope):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    try:
        return schema.model_validate(data)
    except ValidationError:
        return None


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media == b"application/json")
    return False


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read once, then defers to the client's."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return again
