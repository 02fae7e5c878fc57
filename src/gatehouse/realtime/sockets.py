"""Socket.IO at `/socket.io`: `auth: {token}` joins room `user:<id>`; anonymous clients are
reached through their own sid. Events pushed: `notification` (job results), `session.revoked`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio
from fastapi import FastAPI

from gatehouse.bootstrap import Services
from gatehouse.errors import GatehouseError
from gatehouse.selfservice.profile import flow as profile

log = logging.getLogger(__name__)


def install(services: Services) -> socketio.AsyncServer:
    """Register the connection handler on the process's server (idempotent)."""
    sio = services.sockets
    ctx = services.ctx

    async def connect(sid: str, _environ: dict[str, Any], auth: Any = None) -> bool:
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is None or token == "":
            return True  # anonymous: results reach it when a job names its sid in `notify`
        if not isinstance(token, str):
            raise socketio.exceptions.ConnectionRefusedError(
                "Invalid or expired token", {"code": "invalid_token"}
            )
        # The same check as every authenticated call: signature, expiry, a session not revoked
        # and an account that still exists. A bad token is refused rather than made anonymous,
        # so a client never believes it listens to its account when it does not.
        try:
            async with ctx.uow() as uow:
                user = await profile.current_user(ctx, uow, token)
        except GatehouseError as exc:
            # The client sees `{message, data: {code}}` as its connect_error.
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        await sio.enter_room(sid, f"user:{user.id}")
        return True

    sio.on("connect", connect)
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


def mount(app: FastAPI) -> socketio.ASGIApp:
    """The ASGI app uvicorn serves: Socket.IO at `/socket.io`, everything else to FastAPI (which
    keeps its lifespan)."""
    services: Services = app.state.services
    return socketio.ASGIApp(install(services), other_asgi_app=app, socketio_path="socket.io")
