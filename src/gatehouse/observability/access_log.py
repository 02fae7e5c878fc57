"""One access-log line per HTTP request (a websocket's at its end), and its request id, returned
as `X-Request-ID`; the same request counted and timed (`gatehouse_http_requests_total`,
`gatehouse_http_request_duration_seconds`) and, when tracing is on, its server span."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.observability.logs import request_id
from gatehouse.ports.telemetry import NO_METRICS, Metrics, Span, Tracer

log = logging.getLogger("gatehouse.access")
HEADER = b"x-request-id"
# A proxy's id is kept if it is short and plain: it goes into log lines and a response header.
VALID_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
UNMATCHED = "<unmatched>"  # no route: the raw path may hold anything, so it is never logged
LEFT = 499  # no answer was sent: the client went away first (nginx's code for it)
SWITCHED = 101  # a websocket accepted; its line is written when it closes
REFUSED = 403  # a websocket closed before it was accepted (the server answers the handshake 403)
TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class _Routes:
    templates: dict[int, str]  # id of each route object -> its full template
    static: frozenset[str]  # the templates without parameters: their own paths
    ordered: list[tuple[Any, str]]  # in the router's order, to match a path it did not route


class AccessLog:
    """Pure ASGI middleware, outermost, so it sees every answer (413s, CORS preflights and the
    hot routes included): it gives each request an id (a trusted proxy's `X-Request-ID`, or a
    new one), adds it to the answer's headers and to `request.state.request_id`, and logs
    method, route template, status, duration and id. Never the path or the query string: they
    can hold tokens, codes or personal data. A websocket (Socket.IO's) is one request too: its
    handshake gets the id, and its line, written when it closes, its whole duration.

    The same names go to `metrics` (a websocket counted, not timed) and, with a `tracer`, to a
    server span named `<method> <route>` with the request id as `gatehouse.request_id`. A trace
    is continued from the request's `traceparent` only when a trusted proxy sent it (as its
    X-Request-ID): anyone else could otherwise pick trace ids, or have every request sampled."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        trusted_proxies: Sequence[str] = (),
        metrics: Metrics = NO_METRICS,
        tracer: Tracer | None = None,
    ):
        self.app = app
        self.router = router
        self.proxies = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies)
        self._routes: _Routes | None = None  # read from the router on the first request
        self._metrics, self._tracer = metrics, tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._tracer is None:
            await self._answer(scope, receive, send, None)
            return
        method = scope.get("method", "GET")
        with self._tracer.span(method, kind="server", parent=self._parent(scope)) as span:
            await self._answer(scope, receive, send, span)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
        start = time.perf_counter()
        rid = self._request_id(scope)
        # For the 500 handler, which answers outside this middleware (Starlette's outermost).
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER, rid.encode())
        status = LEFT

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                status = message.get("status", SWITCHED)
                message["headers"] = [*message.get("headers", ()), header]
            elif kind == "websocket.close" and status == LEFT:
                status = REFUSED
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if status == LEFT:
                status = 500
            raise
        finally:
            request_id.reset(token)
            self._done(scope, status, time.perf_counter() - start, rid, span)

    def answer(
        self, scope: Scope, send: Send, status: int, headers: Headers, body: bytes
    ) -> Awaitable[None]:
        """Send an answer made beforehand (`web/replays.py`) as if `app` had sent it: the same
        request id, metrics, log line and span, without wrapping `send` or setting the request
        id's context (nothing runs in between that could log). Returns what to await: the
        untraced sending itself, no coroutine around it (a replay's whole cost is a few)."""
        if self._tracer is None:
            return self._send_made(scope, send, status, headers, body, None)
        return self._traced_made(self._tracer, scope, send, status, headers, body)

    async def _traced_made(
        self, tracer: Tracer, scope: Scope, send: Send, status: int, headers: Headers, body: bytes
    ) -> None:
        with tracer.span(scope["method"], kind="server", parent=self._parent(scope)) as span:
            await self._send_made(scope, send, status, headers, body, span)

    async def _send_made(
        self,
        scope: Scope,
        send: Send,
        status: int,
        headers: Headers,
        body: bytes,
        span: Span | None,
    ) -> None:
        start = time.perf_counter()
        rid = self._request_id(scope)
        sent = LEFT  # as `_answer` counts: the status once the start went out
        try:
            start_message = {"type": "http.response.start", "status": status}
            start_message["headers"] = [*headers, (HEADER, rid.encode())]
            await send(start_message)
            sent = status
            await send({"type": "http.response.body", "body": body})
        except BaseException:
            if sent == LEFT:
                sent = 500
            raise
        finally:
            self._done(scope, sent, time.perf_counter() - start, rid, span)

    def _done(self, scope: Scope, status: int, seconds: float, rid: str, span: Span | None) -> None:
        # A websocket's scope has no method: its handshake is a GET.
        method, route = scope.get("method", "GET"), self._route(scope)
        timed = seconds if scope["type"] == "http" else None
        self._metrics.http_request(method, route, status, timed)
        if span is not None:
            _describe(span, method, route, status, rid)
        if log.isEnabledFor(logging.INFO):
            self._log(method, route, status, seconds, rid)

    def _request_id(self, scope: Scope) -> str:
        if self.proxies:
            for name, value in scope["headers"]:
                if name == HEADER:
                    if VALID_ID.fullmatch(value) and self._from_proxy(scope):
                        return bytes(value).decode()
                    break
        return os.urandom(16).hex()

    def _parent(self, scope: Scope) -> dict[str, str]:
        """A trusted proxy's trace context; otherwise none (`{}`: a new trace)."""
        found: dict[str, str] = {}
        if self.proxies and self._from_proxy(scope):
            for name, value in scope["headers"]:
                key = TRACE_HEADERS.get(name)
                if key is not None and len(value) <= 512:
                    found[key] = bytes(value).decode("latin-1")
        return found

    def _from_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        try:
            peer = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return peer is not None and any(peer in net for net in self.proxies)

    def _route(self, scope: Scope) -> str:
        """The template of the route that answered (`/api/jobs/{queue}/{job_id}`)."""
        routes = self._routes or self._index()
        route = scope.get("route")  # set by the router when it matched one
        if route is not None:
            return routes.templates.get(id(route)) or str(getattr(route, "path_format", "?"))
        # Answered before the router (a hot route, a 413, a CORS preflight) or by nobody (404).
        if scope["path"] in routes.static:
            return str(scope["path"])
        for candidate, template in routes.ordered:
            if candidate.matches(scope)[0] is not Match.NONE:
                return template
        return UNMATCHED

    def _index(self) -> _Routes:
        # FastAPI 0.137 stopped copying an included router's routes into the app's list: its
        # route contexts give each route's full path, include prefixes applied.
        contexts: Callable[[Sequence[BaseRoute]], Iterable[Any]] | None = getattr(
            fastapi.routing, "iter_route_contexts", None
        )
        flat = list(self.router.routes if contexts is None else contexts(self.router.routes))
        ordered = [(r, str(r.path_format)) for r in flat if getattr(r, "path_format", None)]
        self._routes = _Routes(
            templates={id(getattr(r, "original_route", r)): t for r, t in ordered},
            static=frozenset(t for _, t in ordered if "{" not in t),
            ordered=ordered,
        )
        return self._routes

    def _log(self, method: str, route: str, status: int, seconds: float, rid: str) -> None:
        ms = round(seconds * 1000, 2)
        fields = {"method": method, "route": route, "status": status, "duration_ms": ms}
        fields["request_id"] = rid
        # `log.info` but for its walk up the stack to the caller's file and line, which no format
        # here prints: a fifth of a line's cost, on every request.
        args = (method, route, status, ms, rid)
        record = log.makeRecord(
            log.name,
            logging.INFO,
            "",
            0,
            "%s %s %d %.2fms %s",
            args,
            None,
            extra={"access": fields},
        )
        log.handle(record)


def _describe(span: Span, method: str, route: str, status: int, rid: str) -> None:
    """The server span's name and attributes (OpenTelemetry's HTTP conventions)."""
    span.rename(f"{method} {route}")
    span.set_attribute("http.request.method", method)
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("gatehouse.request_id", rid)
    if status >= 500:
        span.fail(str(status))
