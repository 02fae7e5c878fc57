"""Pure ASGI middleware (cheap on the hot path): security headers on every response, no-store on
auth answers, a request body size cap enforced while the body streams in, a path handed to
another ASGI app (Socket.IO) inside them, and the client address for the audit trail."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.selfservice.audit import client_address
from gatehouse.web.limits import client_ip

SECURITY_HEADERS = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    # An API serves no documents: nothing may load, run or frame it.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")
# Answers that hold credentials or personal data: the api's, and Socket.IO's long-polling ones
# (pushed job results carry tokens).
PRIVATE_PREFIXES = ("/api/", "/socket.io")


class SecurityHeaders:
    """Adds each security header an answer does not set itself (the docs pages set their own
    Content-Security-Policy: web/docs.py)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        private = path.startswith(PRIVATE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name not in present:
                        headers.append((name, value))
                if private and b"cache-control" not in present:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """413 for bodies over `max_bytes`, by Content-Length up front or counted as they stream."""

    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await _too_large(send)
                    return
        received = 0
        refused = started = answered = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    # Raised inside the app (FastAPI re-raises an HTTPException met while
                    # reading a body), so the app's HTTP error handler answers 413.
                    raise HTTPException(413, "Request body too large")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if refused and not started:
                # An app that swallows the refusal and answers anyway (Engine.IO answers a
                # failed long-polling POST 200) is answered the 413 instead.
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await _too_large(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
        else:
            if not refused:
                return
        if not (started or answered):  # refused, and nothing was answered instead
            await _too_large(send)


class Mounted:
    """Hands the requests and websockets under `path` to `mounted`, before the app's own
    routing; everything else goes on. Placed inside the body limit, the security headers and
    the access log, it gets them as every route does; `scope["route"]` is set to this object,
    whose `path_format` is the template the access log prints."""

    def __init__(self, app: ASGIApp, *, path: str, mounted: ASGIApp):
        self.app = app
        self.mounted = mounted
        self.path_format = path.rstrip("/")
        self._prefix = self.path_format + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.path_format or path.startswith(self._prefix):
                scope["route"] = self
                await self.mounted(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ClientAddress:
    """Each HTTP request's client address (`web/limits.client_ip`: X-Forwarded-For believed
    only from trusted proxies) in `selfservice.audit.client_address`, for the audit records its
    flows write, and cleared after it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "app" not in scope:
            await self.app(scope, receive, send)
            return
        token = client_address.set(client_ip(Request(scope)))
        try:
            await self.app(scope, receive, send)
        finally:
            client_address.reset(token)


async def _too_large(send: Send) -> None:
    body: dict[str, Any] = {
        "status": "error",
        "message": "Request body too large",
        "code": "payload_too_large",
        "errors": [],
    }
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
