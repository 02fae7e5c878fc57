"""Socket.IO: the server the api mounts, and the notifier every process pushes through.

With Redis, every api node's server listens on one pub/sub channel and every emit (from a
worker, or from a flow in any api node) is published there, so any node reaches any client.
Embedded, the one in-process server emits directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio

from gatehouse.jobs.redis_pipeline import PipelinedRedis

CHANNEL = "gatehouse-socketio"
log = logging.getLogger(__name__)


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


class PipelinedPublisher(socketio.AsyncRedisManager):  # type: ignore[misc]  # untyped library
    """python-socketio's write-only Redis manager, publishing on a pipelined connection: the
    PUBLISH is written and the emit returns, without waiting for Redis to answer (a job's
    completion, written next on the same connection, comes after it all the same). A publish
    that fails is logged; python-socketio's own only logged it too."""

    def __init__(self, redis_url: str):
        super().__init__(redis_url, channel=CHANNEL, write_only=True, logger=_wire_log())
        # A push is worth a short wait for a Redis that is restarting, not the job's whole run.
        self._pipe = PipelinedRedis(redis_url, timeout=5.0)

    async def _publish(self, data: Any) -> None:
        reply = await self._pipe.submit("PUBLISH", self.channel, self.json.dumps(data))
        reply.add_done_callback(_published)

    async def aclose(self) -> None:
        await self._pipe.aclose()


def _published(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled() and reply.exception() is not None:
        log.warning("Socket.IO push not published (%s)", type(reply.exception()).__name__)


class SocketIONotifier:
    """`ports.Notifier`: a write-only Redis manager when Redis is set, else the local server."""

    def __init__(self, server: socketio.AsyncServer, redis_url: str = ""):
        self._server = server
        self._manager: Any = None
        if redis_url and PipelinedRedis.supports(redis_url):
            self._manager = PipelinedPublisher(redis_url)
        elif redis_url:
            self._manager = socketio.AsyncRedisManager(
                redis_url, channel=CHANNEL, write_only=True, logger=_wire_log()
            )

    async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None:
        if self._manager is not None:
            await self._manager.emit(event, payload, namespace="/", room=room)
        else:
            await self._server.emit(event, payload, to=room, namespace="/")

    async def session_revoked(self, user_id: str, session_id: str, reason: str) -> None:
        """To the session's own room (its sockets are ended there) and to the user's, so the
        user's other devices can update their list of sessions."""
        payload = {"session_id": session_id, "reason": reason}
        await self.emit(f"session:{session_id}", "session.revoked", payload)
        await self.emit(f"user:{user_id}", "session.revoked", payload)

    async def close(self) -> None:
        if isinstance(self._manager, PipelinedPublisher):
            await self._manager.aclose()
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
