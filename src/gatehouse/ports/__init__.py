"""The interfaces use cases and doors depend on; implementations fulfil them, bootstrap picks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from gatehouse.domain.deliveries import FINAL as FINAL  # re-exported: the delivery log's records
from gatehouse.domain.deliveries import Status as Status
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.sessions import RefreshStep, SessionRecord
from gatehouse.domain.tokens import RefreshToken
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.ports.audit import AuditTrail
from gatehouse.ports.codes import CodeStore as CodeStore  # re-exported beside the others
from gatehouse.ports.factors import Factors as Factors  # re-exported beside the others
from gatehouse.ports.schema import DatabaseSchema as DatabaseSchema
from gatehouse.ports.schema import SchemaReport as SchemaReport

Clock = Callable[[], datetime]


class Users(Protocol):
    async def get(self, user_id: str) -> User | None: ...
    async def get_signed_in(self, user_id: str, session_id: str) -> User | None:
        """The user, if that session of theirs is live: one read, in every authenticated call."""

    async def get_by_email(self, email: str) -> User | None: ...
    async def get_by_phone_index(self, phone_index: str) -> User | None: ...
    async def encrypted_not_under(self, prefix: str, limit: int) -> list[User]:
        """Users with a ciphertext not starting with `prefix` (key rotation), oldest first."""

    async def add(self, user: User) -> None:
        """Raises `errors.Conflict` when the email (or phone index) is taken."""

    async def update(self, user: User) -> None: ...
    async def delete(self, user_id: str) -> None: ...


class PendingRegistrations(Protocol):
    async def get_by_email(self, email: str) -> PendingRegistration | None: ...
    async def encrypted_not_under(self, prefix: str, limit: int) -> list[PendingRegistration]: ...
    async def put(self, pending: PendingRegistration) -> None:
        """Insert, or replace the one for the same email."""

    async def delete(self, pending_id: str) -> None: ...


class RefreshTokens(Protocol):
    async def add(self, token: RefreshToken) -> None: ...
    async def get_by_hash(self, token_hash: str) -> RefreshToken | None: ...
    async def mark_used(self, token_id: str, now: datetime) -> bool:
        """Set `used_at` only if still unused; False means someone else used it first."""

    async def revoke_family(self, family_id: str, now: datetime) -> int: ...
    async def revoke_user(self, user_id: str, now: datetime) -> int: ...


class Sessions(Protocol):
    """Sign-ins. `list_live_for_user`: those not revoked, newest first. `touch`: a live session
    marked used at `now` (`authenticated`: proved then too), returned with its user (None if
    unknown, revoked or without user), in one round trip where the database allows it.
    `seen_since`: whether any session of the user was used since then, and whether one with
    this user agent (None matching None; compared as the database compares text) was, revoked
    ones too: two existence checks, which stop at the first row found, where listing the user
    agents read every session the user has."""

    async def add(self, session: SessionRecord) -> None: ...
    async def get(self, session_id: str) -> SessionRecord | None: ...
    async def list_live_for_user(self, user_id: str) -> list[SessionRecord]: ...
    async def seen_since(
        self, user_id: str, user_agent: str | None, since: datetime
    ) -> tuple[bool, bool]: ...
    async def touch(
        self, session_id: str, now: datetime, *, authenticated: bool = False
    ) -> tuple[SessionRecord, User] | None: ...
    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool: ...
    async def revoke_user(self, user_id: str, now: datetime, reason: str) -> int: ...
    async def rotate(self, step: RefreshStep) -> bool:
        """The live session's refresh token moved on (`RefreshStep`), only if the row still
        holds the step's current token: False when it does not, or the session is revoked
        (another rotation or a logout went first)."""


class Outbox(Protocol):
    async def add(self, message: OutboxMessage) -> None: ...


class UnitOfWork(Protocol):
    """One database transaction; leaving it without `commit()` rolls everything back."""

    @property
    def users(self) -> Users: ...
    @property
    def pending(self) -> PendingRegistrations: ...
    @property
    def refresh_tokens(self) -> RefreshTokens: ...
    @property
    def sessions(self) -> Sessions: ...
    @property
    def factors(self) -> Factors: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def audit(self) -> AuditTrail: ...

    async def __aenter__(self) -> UnitOfWork: ...
    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def commit(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    seq: int
    message: OutboxMessage


class OutboxStore(Protocol):
    """The relay's side of the outbox."""

    async def claim(
        self, limit: int, publish: Callable[[Sequence[OutboxRecord]], Awaitable[None]]
    ) -> int:
        """Lock up to `limit` unpublished rows in order, await `publish`, mark them published;
        returns how many. If `publish` raises, nothing is marked."""

    async def pending_count(self) -> int: ...
    async def prune(self, older_than: datetime) -> int: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str, password: str) -> tuple[bool, bool]:
        """(matches, needs_rehash)"""

    async def burn(self, password: str) -> None:
        """Spend the time of one verification: unknown accounts cost as much as known ones."""


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


class EventPublisher(Protocol):
    """Where the relay sends outbox rows: Kafka in production, the in-process bus embedded."""

    async def start(self) -> None: ...
    async def publish(self, records: Sequence[Published]) -> None:
        """Returns once every record is acknowledged; raises if any is not."""

    async def close(self) -> None: ...
    async def ping(self) -> None: ...


@dataclass(slots=True)
class Delivery:
    """One consumed message with the means to acknowledge it once handled."""

    value: bytes
    ack: Callable[[], Awaitable[None]]
    key: str | None = None  # the record's key (Kafka), when the source has one
    # Where it was read from, for the dead-letter headers (-1: the source has no such notion).
    topic: str = ""
    partition: int = -1
    offset: int = -1
    # The record's headers the consumer may use: its W3C trace context (`traceparent`).
    headers: dict[str, str] | None = None


class DeliverySource(Protocol):
    """What the courier reads from: the `send-otp` topic or the in-process bus."""

    def deliveries(self) -> AsyncIterator[Delivery]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    id: str
    channel: str
    to: str
    subject: str
    body: str


class Channel(Protocol):
    """A delivery technology (SMTP, SendGrid, Twilio SMS/WhatsApp, console)."""

    name: str

    async def send(self, message: OutgoingMessage) -> None:
        """Raises `errors.ChannelError` with `permanent` telling whether a retry can help."""


class RateLimiter(Protocol):
    async def hit(self, rule: str, key: str) -> int | None:
        """Count one request; the seconds to wait if `key` is over the rule's limits, else None.
        Raises `errors.Unavailable` when the limits cannot be checked (fail closed)."""


class FailureCounter(Protocol):
    """Consecutive failures per key (failed logins), forgotten a window after the last one."""

    async def get(self, key: str, now: float) -> tuple[int, float]:
        """(failures, epoch seconds of the last one); (0, 0.0) when none in the window."""

    async def add(self, key: str, now: float, window_seconds: int) -> int: ...
    async def clear(self, key: str) -> None: ...


class Notifier(Protocol):
    """Pushes an event to a Socket.IO room (`user:<id>` or a client's sid) on any api node."""

    async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None: ...
    async def session_revoked(self, user_id: str, session_id: str, reason: str) -> None:
        """`session.revoked` to the session's sockets and to the user's."""


@dataclass(frozen=True, slots=True)
class JobState:
    id: str
    queue: str
    name: str
    state: str  # waiting | delayed | active | completed | failed | unknown
    result: dict[str, Any] | None = None
    failed_reason: str | None = None
    attempts_made: int = 0
    finished_at: datetime | None = None


class Jobs(Protocol):
    """Submits jobs to the named queues and reads their state (BullMQ, or in-process embedded)."""

    async def submit(
        self, queue: str, name: str, data: dict[str, Any], job_id: str | None = None
    ) -> str:
        """Returns the job id; submitting an existing `job_id` again is a no-op."""

    async def get(self, queue: str, job_id: str) -> JobState | None: ...
    async def failed(self, queue: str, limit: int = 100) -> list[JobState]:
        """The failed set, most recent first: ids, names, attempts and reasons, never data."""

    async def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> list[str]:
        """Move failed jobs back to waiting with their attempts reset (`None`: every job failed
        at the time of the call); returns the ids moved. Ids not in the failed set are skipped."""


@dataclass(frozen=True, slots=True)
class JobRun:
    """One attempt at a job, as the queue hands it to the processor."""

    id: str
    queue: str
    name: str
    data: Any
    attempt: int  # 1 for the first try
    final: bool  # True when no retry follows if this attempt raises


JobProcessor = Callable[[JobRun], Awaitable[dict[str, Any]]]


class JobWorker(Protocol):
    """The consuming side of `Jobs`: BullMQ workers, or the in-process queue embedded."""

    async def work(
        self, queues: Sequence[str], process: JobProcessor, stop: asyncio.Event, concurrency: int
    ) -> None:
        """Runs `process` on the jobs of `queues` until `stop` is set, then lets in-flight jobs
        finish. A returned value completes the job; an exception fails this attempt (retried
        with backoff unless `final`)."""


class Renderer(Protocol):
    """Message templates: `(subject, body)` for a template name and its variables."""

    def render(
        self, name: str, variables: dict[str, str], *, short: bool = False
    ) -> tuple[str, str]:
        """`short`: the one-line plain text for SMS and WhatsApp (its `.sms` variant, else the
        body), with an empty subject."""


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What the courier knows of one message; while `sending`, `lease_owner` holds it until
    `lease_until`."""

    id: str
    status: Status
    channel: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: `won` means the caller now holds the lease; otherwise `record`
    says why not (a final status, or someone else's live lease)."""

    won: bool
    record: DeliveryRecord


class DeliveryLog(Protocol):
    """The courier's record of each message, keyed by message id: it de-duplicates redelivered
    commands, leases each message to one courier at a time, and keeps each outcome. The
    database is the arbiter: conditional statements decide who holds a message."""

    async def get(self, message_id: str) -> DeliveryRecord | None: ...
    async def claim(self, message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        """Take the message (`sending`, leased to `owner` until `until`) if it is unknown,
        `queued`, `sending` under an expired lease or no lease, or already `owner`'s (a
        renewal). Of several couriers claiming at once exactly one wins."""

    async def release(self, message_id: str, owner: str, now: datetime) -> None:
        """Give back a lease `owner` holds (status `queued`), so another courier needs not wait
        for it to expire."""

    async def record(
        self,
        message_id: str,
        status: Status,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
        owner: str | None = None,
    ) -> bool:
        """Insert or update the record and add `event` to the outbox, in one transaction.

        Never over a final status: the first outcome recorded wins, with its one event. A final
        status clears the lease; `sending` with `owner` is written only while `owner` holds it.
        False when nothing was written."""
