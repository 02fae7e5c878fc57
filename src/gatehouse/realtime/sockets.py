"""Socket.IO at `/socket.io`: `auth: {token}` ties the connection to the token's session (rooms
`user:<id>` and `session:<sid>`) until the session is revoked or the token expires; the event
`token` hands over a newer token of the same session. Anonymous clients are reached through their
own sid. Events pushed: `notification` (job results), `session.revoked`, `security.notice`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import socketio
from fastapi import FastAPI
from starlette.middleware import Middleware

from gatehouse.bootstrap import Services
from gatehouse.errors import GatehouseError, InvalidToken
from gatehouse.realtime.members import Member, Members, Verdict
from gatehouse.selfservice.sessions.flow import authenticate
from gatehouse.web.middleware import BodyLimit, Mounted

log = logging.getLogger(__name__)
PATH = "/socket.io"
CHECKS = 3  # token checks a connection gets while revocations of its user keep arriving


def members_of(sio: Any) -> Members:
    members = getattr(sio.manager, "members", None)
    if not isinstance(members, Members):
        raise TypeError("the Socket.IO server was not built by realtime.notifier.socket_server")
    return members


def _refusal(code: str, message: str) -> dict[str, Any]:
    """The answer to a `token` event the server does not take (the client's ack, if it asked)."""
    return {"status": "error", "message": message, "code": code}


def install(services: Services) -> socketio.AsyncServer:
    """Register the handlers on the process's server (idempotent)."""
    sio = services.sockets
    ctx = services.ctx
    members = members_of(sio)
    # Engine.IO's own cap on a message (a long-polling body, a websocket frame): the api's.
    sio.eio.max_http_buffer_size = services.settings.max_body_bytes

    async def checked(sid: str, token: str) -> Verdict:
        """The same check as every authenticated call (signature, expiry, a live session, an
        account still there), then the rooms, atomically with what revocations decide."""
        since, checked_at = time.monotonic(), time.time()
        async with ctx.uow() as uow:
            user, claims = await authenticate(ctx, uow, token)
        return members.join(Member(sid, user.id, claims.sid, checked_at, claims.exp), since)

    async def live(user_id: str, session_id: str) -> bool:
        async with ctx.uow() as uow:
            return await uow.users.get_signed_in(user_id, session_id) is not None

    members.configure(live=live, clock=ctx.clock)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        accepted = await admit(sid, environ, auth)
        if accepted:  # `disconnect` is called for accepted connections only
            services.metrics.socket_connections(1)
        return accepted

    async def admit(sid: str, _environ: dict[str, Any], auth: Any = None) -> bool:
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is None or token == "":
            return True  # anonymous: results reach it when a job names its sid in `notify`
        # A bad token is refused rather than made anonymous, so a client never believes it
        # listens to its account when it does not.
        try:
            if not isinstance(token, str):
                raise InvalidToken()
            for _ in range(CHECKS):
                verdict = await checked(sid, token)
                if verdict is Verdict.JOINED:
                    return True
                if verdict is Verdict.REVOKED:
                    break
                # RECHECK: every session of the user was revoked while this one was read; read
                # again, now that the revocation is committed.
            raise InvalidToken()
        except GatehouseError as exc:
            # The client sees `{message, data: {code}}` as its connect_error.
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None

    async def renew(sid: str, data: Any = None) -> dict[str, Any]:
        """Event `token`: a newer access token of the socket's own session moves its deadline."""
        token = data.get("token") if isinstance(data, dict) else data
        member = members.get(sid)
        if member is None or member.ended:
            return _refusal("no_session", "This connection belongs to no session")
        if not isinstance(token, str) or not token:
            return _refusal(InvalidToken.code, InvalidToken.message)
        if member.renewing:  # one database read at a time per socket
            return _refusal("busy", "A token is already being checked")
        member.renewing = True
        try:
            async with ctx.uow() as uow:
                user, claims = await authenticate(ctx, uow, token)
        except GatehouseError as exc:
            return _refusal(exc.code, exc.message)
        finally:
            member.renewing = False
        if (user.id, claims.sid) != (member.user_id, member.session_id):
            return _refusal("wrong_session", "The token belongs to another session")
        if claims.exp <= member.expires:
            return _refusal("not_newer", "The token expires no later than the current one")
        if not members.renew(member, claims.exp):  # the session ended while it was checked
            return _refusal(InvalidToken.code, InvalidToken.message)
        expires_in = int((claims.exp - ctx.clock()).total_seconds())
        data = {"expires_in": expires_in}
        return {"status": "success", "message": "Token accepted", "data": data}

    async def disconnect(sid: str, _reason: Any = None) -> None:
        members.leave(sid)
        services.metrics.socket_connections(-1)

    sio.on("connect", connect)
    sio.on("token", renew)
    sio.on("disconnect", disconnect)
    return sio


def start_listening(services: Services) -> None:
    """Subscribe to the Redis channel at start-up rather than at the first connection, so the
    first client of a node does not miss what is pushed while the subscription is being set up.
    python-socketio initialises its manager on the first connection unless told before."""
    sio = services.sockets
    if not sio.manager_initialized:
        sio.manager_initialized = True
        sio.manager.initialize()


def sockets_role(services: Services) -> Any:
    """A background role of the api: listen from start-up, stop the server's tasks at the end."""
    sio = services.sockets

    async def subscribed() -> None:
        """Readiness: this node hears what other processes push once it is subscribed."""
        pubsub = getattr(sio.manager, "pubsub", None)
        if pubsub is None or not pubsub.subscribed:
            raise RuntimeError("not yet subscribed to the Socket.IO channel")

    if services.settings.redis_url:
        services.checks["sockets"] = subscribed

    async def run(stop: asyncio.Event) -> None:
        start_listening(services)
        await stop.wait()
        await members_of(sio).close()  # deadlines and pending disconnections
        await services.sockets.shutdown()
        manager = services.sockets.manager
        listener = getattr(manager, "thread", None)  # the Redis subscription
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for client in (getattr(manager, "pubsub", None), getattr(manager, "redis", None)):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    return run


def mount(app: FastAPI) -> FastAPI:
    """Socket.IO at `/socket.io`, inside the app's middleware: right within the body limit (so
    also within the security headers and the access log, which wrap it), before CORS (Engine.IO
    checks origins against the same allowlist itself) and FastAPI's routing. Returns the app."""
    sio = install(app.state.services)
    if app.middleware_stack is not None:
        raise RuntimeError("mount Socket.IO before the app serves its first request")
    limits = [i for i, m in enumerate(app.user_middleware) if getattr(m, "cls", None) is BodyLimit]
    if not limits:
        raise RuntimeError("the app has no BodyLimit middleware to mount Socket.IO within")
    engine = socketio.ASGIApp(sio, socketio_path=None)  # everything it is given is Socket.IO's
    app.user_middleware.insert(limits[0] + 1, Middleware(Mounted, path=PATH, mounted=engine))
    return app
