"""The hot routes answered at the front of the served app, not inside the framework's stack.

`web/hot.py` answers a marked route before FastAPI's router, but under every layer the app is
built from: Starlette's error middleware and FastAPI's own, then the access log, the security
headers, the body limit, Socket.IO's mount and the client address, each a call and most a wrapper
around `send`. For the profile read those layers cost more than the read (issue 17's profile:
the answer itself was 8 % of the worker's time). `HotFront` wraps the whole app and hands a hot
route's plainly well-formed request to a short chain built from the same middleware classes
with the same settings (access log, security headers, client address) around the same
`HotRoute`: the same answer, headers, request id, log line and metrics, fewer layers.

Anything else goes to the app untouched: other routes, websockets, a request with an `Origin`
(CORS answers it there), a body without a Content-Length or over the limit, a body the route's
schema does not plainly accept (replayed), and everything while a test overrides dependencies.
An exception the route raises is answered as the app's handlers answer it.

A bodiless hot route's answer that its endpoint marked replayable is given again to the same
Authorization header while it holds, through the access log alone (`web/replays.py`)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.observability.access_log import AccessLog
from gatehouse.web.hot import HotRoute, plain_kwargs, respond, table
from gatehouse.web.middleware import ClientAddress, SecurityHeaders
from gatehouse.web.replays import Replays, key_of


class HotFront:
    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, max_body_bytes: int):
        self.app, self.fastapi, self.max_body_bytes = app, fastapi, max_body_bytes
        self._built: tuple[dict[tuple[str, str], HotRoute], AccessLog] | None = None
        self._cors = False
        self.replays = Replays()

    def _build(self) -> tuple[dict[tuple[str, str], HotRoute], AccessLog]:
        """On the first request, as the app builds its own stack: its routes are complete."""
        services = self.fastapi.state.services
        settings = services.settings
        self._cors = bool(settings.cors_origins)
        chain = AccessLog(
            SecurityHeaders(ClientAddress(self._answer)),
            router=self.fastapi.router,
            trusted_proxies=settings.trusted_proxies,
            metrics=services.metrics,
            tracer=services.tracer,
        )
        self._built = table(self.fastapi.router.routes), chain
        return self._built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        routes, chain = self._built or self._build()
        route = routes.get((scope["method"], scope["path"]))
        if route is None or self.fastapi.dependency_overrides or self._origin(scope):
            await self.app(scope, receive, send)
            return
        if route.schema is not None:
            length = self._length(scope)
            if length is None or length > self.max_body_bytes:
                await self.app(scope, receive, send)  # the body limit's to judge
                return
        elif (key := key_of(scope)) is not None:
            replay = self.replays.find(key)
            if replay is not None:
                await chain.answer(scope, send, replay.status, replay.headers, replay.body)
                return
            send = self.replays.recording(key, scope, send)
        kwargs = await plain_kwargs(route, scope, receive, send, self.app)
        if kwargs is None:
            return
        scope["app"] = self.fastapi  # as Starlette sets it: `request.app` for the dependencies
        scope["gatehouse.hot"] = (route, kwargs)
        await chain(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, kwargs = scope.pop("gatehouse.hot")
        await respond(route, kwargs, scope, receive, send, unexpected=True)

    def _origin(self, scope: Scope) -> bool:
        return self._cors and any(name == b"origin" for name, _ in scope["headers"])

    @staticmethod
    def _length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return int(value) if value.isdigit() else None
        return None
