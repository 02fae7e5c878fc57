"""Socket.IO: the server the api mounts, and the notifier every process pushes through.

With Redis, every api node's server listens on one pub/sub channel and every emit (from a
worker, or from a flow in any api node) is published there, so any node reaches any client.
Embedded, the one in-process server emits directly."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import socketio

CHANNEL = "gatehouse-socketio"


def _wire_log() -> logging.Logger:
    """python-socketio logs every packet at INFO, payloads included (tokens, personal data, job
    results): only its warnings and errors get through, whatever the process's level."""
    wire = logging.getLogger("gatehouse.sockets")
    wire.setLevel(logging.WARNING)
    return wire


def socket_server(redis_url: str, cors_origins: list[str]) -> socketio.AsyncServer:
    """Built once per process; only api processes mount it (and then it listens on Redis)."""
    manager = socketio.AsyncRedisManager(redis_url, channel=CHANNEL) if redis_url else None
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        # Empty means same-origin only; non-browser clients send no Origin and are not concerned.
        cors_allowed_origins=cors_origins or None,
        logger=_wire_log(),
        engineio_logger=_wire_log(),
    )


class SocketIONotifier:
    """`ports.Notifier`: a write-only Redis manager when Redis is set, else the local server."""

    def __init__(self, server: socketio.AsyncServer, redis_url: str = ""):
        self._server = server
        self._manager = None
        if redis_url:
            self._manager = socketio.AsyncRedisManager(
                redis_url, channel=CHANNEL, write_only=True, logger=_wire_log()
            )

    async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None:
        if self._manager is not None:
            await self._manager.emit(event, payload, namespace="/", room=room)
        else:
            await self._server.emit(event, payload, to=room, namespace="/")

    async def close(self) -> None:
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
