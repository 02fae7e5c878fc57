"""Ports wrapped with spans, put in place by bootstrap only when tracing is on (so, off, nothing
here runs): the trace context rides with each outbox row, each job a Gatehouse door submits,
each Socket.IO push and each provider call of the courier.

- `traced_units`: every outbox row a flow writes carries the current context in its payload
  (`TRACE_FIELD`); the relay takes it out and publishes it as Kafka headers (`outbox/relay.py`).
- `TracedJobs`: a `publish <queue>` span, whose context goes in the job's data
  (`traceparent`), where the worker finds it (`jobs/worker.py`).
- `TracedNotifier`: an `emit <event>` span for each push.
- `TracedChannel`: a `send <channel>` span around each provider call (SMTP, SendGrid, Twilio)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from gatehouse.domain.events import OutboxMessage
from gatehouse.ports import (
    Channel,
    Factors,
    Jobs,
    JobState,
    Notifier,
    Outbox,
    OutgoingMessage,
    PendingRegistrations,
    RefreshTokens,
    Sessions,
    UnitOfWork,
    Users,
)
from gatehouse.ports.audit import AuditTrail
from gatehouse.ports.telemetry import TRACE_FIELD, TRACE_KEYS, Tracer


class _TracedOutbox:
    def __init__(self, inner: Outbox, tracer: Tracer):
        self._inner, self._tracer = inner, tracer

    async def add(self, message: OutboxMessage) -> None:
        carrier = self._tracer.carrier()
        if carrier:
            payload = {**message.payload, TRACE_FIELD: carrier}
            message = dataclasses.replace(message, payload=payload)
        await self._inner.add(message)


class TracedUnitOfWork:
    """A unit of work whose outbox rows carry the trace context; the rest is the inner one's."""

    def __init__(self, inner: UnitOfWork, tracer: Tracer):
        self._inner, self._tracer = inner, tracer

    def __getattr__(self, name: str) -> Any:  # anything an implementation adds of its own
        return getattr(self._inner, name)

    @property
    def users(self) -> Users:
        return self._inner.users

    @property
    def pending(self) -> PendingRegistrations:
        return self._inner.pending

    @property
    def refresh_tokens(self) -> RefreshTokens:
        return self._inner.refresh_tokens

    @property
    def sessions(self) -> Sessions:
        return self._inner.sessions

    @property
    def factors(self) -> Factors:
        return self._inner.factors

    @property
    def outbox(self) -> Outbox:
        return _TracedOutbox(self._inner.outbox, self._tracer)

    @property
    def audit(self) -> AuditTrail:
        return self._inner.audit

    async def __aenter__(self) -> UnitOfWork:
        entered = await self._inner.__aenter__()
        return self if entered is self._inner else TracedUnitOfWork(entered, self._tracer)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(et, e, tb)

    async def commit(self) -> None:
        await self._inner.commit()


def traced_units(units: Callable[[], UnitOfWork], tracer: Tracer) -> Callable[[], UnitOfWork]:
    def unit() -> UnitOfWork:
        return TracedUnitOfWork(units(), tracer)

    return unit


class TracedJobs:
    """`ports.Jobs` whose submissions are `publish <queue>` spans, their context in the data."""

    def __init__(self, inner: Jobs, tracer: Tracer):
        self._inner, self._tracer = inner, tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def submit(
        self, queue: str, name: str, data: dict[str, Any], job_id: str | None = None
    ) -> str:
        attributes = {
            "messaging.system": "bullmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "gatehouse.job.name": name,
        }
        with self._tracer.span(f"publish {queue}", kind="producer", attributes=attributes) as span:
            carrier = span.carrier()
            # The door's own span replaces whatever context the client put in the data.
            data = {k: v for k, v in data.items() if k not in TRACE_KEYS}
            data.update((k, v) for k, v in carrier.items() if k in TRACE_KEYS)
            submitted = await self._inner.submit(queue, name, data, job_id)
            span.set_attribute("messaging.message.id", submitted)
            return submitted

    async def get(self, queue: str, job_id: str) -> JobState | None:
        return await self._inner.get(queue, job_id)

    async def failed(self, queue: str, limit: int = 100) -> list[JobState]:
        return await self._inner.failed(queue, limit)

    async def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> list[str]:
        return await self._inner.retry(queue, job_ids)


def _room_kind(room: str) -> str:
    """What a room is, never who: `user`, `session`, or `sid` (one client's own)."""
    kind, sep, _ = room.partition(":")
    return kind if sep and kind in ("user", "session") else "sid"


class TracedNotifier:
    """`ports.Notifier` whose pushes are `emit <event>` spans."""

    def __init__(self, inner: Notifier, tracer: Tracer):
        self._inner, self._tracer = inner, tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None:
        attributes = {
            "messaging.system": "socket.io",
            "messaging.destination.name": _room_kind(room),
        }
        with self._tracer.span(f"emit {event}", kind="producer", attributes=attributes):
            await self._inner.emit(room, event, payload)

    async def session_revoked(self, user_id: str, session_id: str, reason: str) -> None:
        with self._tracer.span("emit session.revoked", kind="producer"):
            await self._inner.session_revoked(user_id, session_id, reason)


class TracedChannel:
    """`ports.Channel` whose provider calls are `send <channel>` spans (client spans: the
    mail server, SendGrid, Twilio answer them)."""

    def __init__(self, inner: Channel, tracer: Tracer):
        self._inner, self._tracer = inner, tracer
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:  # `aclose`, when the channel has one
        return getattr(self._inner, name)

    async def send(self, message: OutgoingMessage) -> None:
        attributes = {"gatehouse.channel": self.name, "gatehouse.message_id": message.id}
        with self._tracer.span(f"send {self.name}", kind="client", attributes=attributes):
            await self._inner.send(message)
