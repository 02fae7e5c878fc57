"""Socket.IO: the server the api mounts, and the notifier every process pushes through.

With Redis, every api node's server listens on one pub/sub channel and every emit (from a
worker, or from a flow in any api node) is published there, so any node reaches any client.
Embedded, the one in-process server emits directly. Either way the server's client manager
applies each `session.revoked` it delivers to the sockets of its node (realtime/members.py),
and every emit published carries `sent_at`, the time it was published, for that."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import socketio

from gatehouse.jobs.redis_pipeline import PipelinedRedis
from gatehouse.realtime.members import Members, Revocation

CHANNEL = "gatehouse-socketio"
SENT_AT = "sent_at"  # a field of python-socketio's pub/sub message, beside its own
log = logging.getLogger(__name__)


def _wire_log() -> logging.Logger:
    """python-socketio logs every packet at INFO, payloads included (tokens, personal data, job
    results): only its warnings and errors get through, whatever the process's level."""
    wire = logging.getLogger("gatehouse.sockets")
    wire.setLevel(logging.WARNING)
    return wire


def socket_server(redis_url: str, cors_origins: list[str]) -> socketio.AsyncServer:
    """Built once per process; only api processes mount it (and then it listens on Redis)."""
    members = Members()
    manager = RevokingRedisManager(redis_url, members) if redis_url else RevokingManager(members)
    server = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        # Empty means same-origin only; non-browser clients send no Origin and are not concerned.
        cors_allowed_origins=cors_origins or None,
        logger=_wire_log(),
        engineio_logger=_wire_log(),
    )
    members.server = server
    return server


def _stamped(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("method") == "emit":
        return {**message, SENT_AT: time.time()}
    return message


def _merged(skip_sid: Any, more: list[str]) -> Any:
    if not more:
        return skip_sid
    if skip_sid is None:
        return more
    return [*(skip_sid if isinstance(skip_sid, list) else [skip_sid]), *more]


class RevokingManager(socketio.AsyncManager):  # type: ignore[misc]  # untyped library
    """The embedded server's manager: each emit is delivered here, revocations applied."""

    def __init__(self, members: Members):
        super().__init__()
        self.members = members

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        revocation = self.members.revoking(event, data, room)
        if revocation is None:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        try:
            skip = _merged(skip_sid, revocation.skip)
            await super().emit(event, data, namespace, room=room, skip_sid=skip)
            if revocation.told:
                await super().emit(event, data, namespace, room=revocation.told)
        finally:
            self.members.finish(revocation)


class RevokingRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]  # untyped library
    """An api node's manager: delivers what any process published, revocations applied, and
    stamps what it publishes itself."""

    def __init__(self, redis_url: str, members: Members):
        super().__init__(redis_url, channel=CHANNEL, logger=_wire_log())
        self.members = members

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        payload = data[0] if isinstance(data, list) and len(data) == 1 else data
        revocation: Revocation | None = self.members.revoking(
            message.get("event"), payload, message.get("room"), message.get(SENT_AT)
        )
        if revocation is None:
            await super()._handle_emit(message)
            return
        try:
            skip = _merged(message.get("skip_sid"), revocation.skip)
            await super()._handle_emit({**message, "skip_sid": skip})
            if revocation.told:
                told = {**message, "room": revocation.told, "skip_sid": None, "callback": None}
                await super()._handle_emit(told)
        finally:
            self.members.finish(revocation)

    async def _publish(self, data: Any) -> None:
        await super()._publish(_stamped(data))


class StampedPublisher(socketio.AsyncRedisManager):  # type: ignore[misc]  # untyped library
    """python-socketio's write-only Redis manager, stamping what it publishes."""

    def __init__(self, redis_url: str):
        super().__init__(redis_url, channel=CHANNEL, write_only=True, logger=_wire_log())

    async def _publish(self, data: Any) -> None:
        await super()._publish(_stamped(data))


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
        message = self.json.dumps(_stamped(data))
        reply = await self._pipe.submit("PUBLISH", self.channel, message)
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
            self._manager = StampedPublisher(redis_url)

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
