"""Shared helpers of the unit suite: a controllable clock, fault-injecting fakes, outbox readers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from gatehouse.config import Settings
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import ChannelError, Unavailable
from gatehouse.ports import Delivery, OutgoingMessage, UnitOfWork
from tests.fakes import MemoryDatabase


def offline_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings of an in-process Gatehouse on nothing outside the test: SQLite and secrets in
    `tmp`, no Redis, Kafka or SMTP (the embedded adapters), a cheap argon2id; no `.env`."""
    base: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp}/gatehouse.db",
        "secrets_file": tmp / "secrets.json",
        "secrets_json": "",
        "redis_url": "",
        "kafka_bootstrap_servers": "",
        "smtp_url": "",
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
    }
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


class FakeClock:
    """A wall clock and a monotonic clock that only move when told to.

    It starts at the real current time (to the second), so what it stamps looks like real data."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime.now(UTC).replace(microsecond=0)
        self._mono = 1_000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self._mono += seconds


# --- the outbox of a MemoryDatabase -------------------------------------------------------------


def outbox_messages(db: MemoryDatabase) -> list[OutboxMessage]:
    return [message for _seq, message, _published in db.tables.outbox]


def deliveries(db: MemoryDatabase, template: str | None = None) -> list[OutboxMessage]:
    return [
        m
        for m in outbox_messages(db)
        if m.topic == events.SEND_OTP and (template is None or m.payload["template"] == template)
    ]


def user_events(db: MemoryDatabase, kind: str | None = None) -> list[OutboxMessage]:
    return [
        m
        for m in outbox_messages(db)
        if m.topic == events.USER_EVENTS and (kind is None or m.payload["type"] == kind)
    ]


def code_in(keyring: Keyring, payload: dict[str, Any]) -> str:
    """The plaintext code of a `send-otp` command, opened as the courier opens it."""
    return keyring.decrypt(payload["code_ciphertext"], events.code_context(payload["id"]))


def last_code(db: MemoryDatabase, keyring: Keyring, email: str) -> str:
    sent = [m for m in deliveries(db, "verify-email") if m.payload["to"] == email]
    assert sent, f"no verification code was queued for {email}"
    return code_in(keyring, sent[-1].payload)


def other_code(code: str, offset: int = 1) -> str:
    """A well-formed code that differs from `code`."""
    return f"{(int(code) + offset) % 1_000_000:06d}"


def dumps(payload: Any) -> str:
    return json.dumps(payload, default=str)


# --- a unit of work that fails on demand ----------------------------------------------------------


def _down() -> Exception:
    return Unavailable("database down")


class FaultyUow:
    """Wraps a unit-of-work factory; the step named `fail_at` (`enter`, `commit`, `outbox.add`)
    raises `error()` the next `times` times it is reached."""

    def __init__(
        self,
        inner: Callable[[], UnitOfWork],
        *,
        fail_at: str,
        times: int = 1,
        error: Callable[[], Exception] = _down,
    ):
        self._inner, self.fail_at, self.remaining, self._error = inner, fail_at, times, error
        self.failures = 0

    def __call__(self) -> _FaultyUnit:
        return _FaultyUnit(self, self._inner())

    def maybe_fail(self, step: str) -> None:
        if step == self.fail_at and self.remaining > 0:
            self.remaining -= 1
            self.failures += 1
            raise self._error()


class _FaultyOutbox:
    def __init__(self, owner: FaultyUow, inner: Any):
        self._owner, self._inner = owner, inner

    async def add(self, message: OutboxMessage) -> None:
        self._owner.maybe_fail("outbox.add")
        await self._inner.add(message)


class _FaultyUnit:
    def __init__(self, owner: FaultyUow, inner: UnitOfWork):
        self._owner, self._inner = owner, inner

    @property
    def users(self) -> Any:
        return self._inner.users

    @property
    def pending(self) -> Any:
        return self._inner.pending

    @property
    def refresh_tokens(self) -> Any:
        return self._inner.refresh_tokens

    @property
    def sessions(self) -> Any:
        return self._inner.sessions

    @property
    def factors(self) -> Any:
        return self._inner.factors

    @property
    def outbox(self) -> Any:
        return _FaultyOutbox(self._owner, self._inner.outbox)

    @property
    def audit(self) -> Any:
        return self._inner.audit

    async def __aenter__(self) -> _FaultyUnit:
        self._owner.maybe_fail("enter")
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(et, e, tb)

    async def commit(self) -> None:
        self._owner.maybe_fail("commit")
        await self._inner.commit()


# --- courier fakes ----------------------------------------------------------------------------


@dataclass
class RecordingChannel:
    """A Channel that records what it sends and raises the queued failures first."""

    name: str = "email"
    failures: list[ChannelError] = field(default_factory=list)
    sent: list[OutgoingMessage] = field(default_factory=list)
    attempts: int = 0

    async def send(self, message: OutgoingMessage) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)


def acked_delivery(value: bytes) -> tuple[Delivery, list[int]]:
    """A Delivery and the list its ack appends to (so a test can count acknowledgements)."""
    acks: list[int] = []

    async def ack() -> None:
        acks.append(1)

    return Delivery(value, ack), acks
