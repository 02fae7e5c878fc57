"""How the courier writes down what happens to one message: its lease (taken, renewed, given
back), each failed try, and the outcome with its event, through the `DeliveryLog` port."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import Unavailable
from gatehouse.ports import FINAL, SENDING, SENT, Claim, Clock, DeliveryLog, DeliveryRecord

log = logging.getLogger(__name__)

# Besides the record's statuses (from ports), what one call did.
DUPLICATE, HELD = "duplicate", "held"
MAX_ERROR = 200


class Unrecorded(Exception):
    """The outcome (`status`) could not be written: the database is unavailable. `retry` writes
    it again, and only it: the message must not be sent a second time for want of a record."""

    def __init__(self, status: str, retry: Callable[[], Awaitable[str]]):
        super().__init__(f"outcome {status!r} not recorded")
        self.status, self.retry = status, retry


class NotRecorded:
    """No delivery log: nothing is leased, de-duplicated nor recorded (tools and tests)."""

    async def get(self, message_id: str) -> DeliveryRecord | None:
        return None

    async def claim(self, message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        return Claim(True, DeliveryRecord(message_id, SENDING, None, 0, None, now, now))

    async def release(self, message_id: str, owner: str, now: datetime) -> None:
        return None

    async def record(
        self,
        message_id: str,
        status: str,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
        owner: str | None = None,
    ) -> bool:
        return True


@dataclass
class Outcome:
    """What one command has gone through so far, its lease, and how it is written down."""

    message_id: str
    key: str
    template: str
    deliveries: DeliveryLog
    clock: Clock
    owner: str
    lease: timedelta
    attempts: int = 0
    channel: str | None = None
    error: str | None = None
    holding: bool = False  # this courier holds the lease
    sending: bool = False  # a provider call is under way

    def failed(self, channel: str, reason: str) -> None:
        self.channel, self.error = channel, f"{channel}: {reason}"[:MAX_ERROR]
        log.warning("delivery %s on %s failed: %s", self.message_id, channel, reason)

    async def claim(self) -> str | None:
        """Take the lease, or renew it: None when this courier holds it, else what to answer
        (`duplicate`: an outcome is recorded; `held`: another courier's lease is live)."""
        now = self.clock()
        claim = await self.deliveries.claim(self.message_id, self.owner, now, now + self.lease)
        self.holding = claim.won
        if claim.won:
            self.attempts = max(self.attempts, claim.record.attempts)
            return None
        if claim.record.status in FINAL:
            log.info("delivery %s already %s: not sent again", self.message_id, claim.record.status)
            return DUPLICATE
        log.info(
            "delivery %s is leased to %s until %s: left to it",
            self.message_id,
            claim.record.lease_owner,
            claim.record.lease_until,
        )
        return HELD

    async def progress(self) -> str | None:
        """Write the failed try down; `held` when the lease was lost meanwhile."""
        kept = await self.deliveries.record(
            self.message_id,
            SENDING,
            self.channel,
            self.attempts,
            self.error,
            None,
            self.clock(),
            owner=self.owner,
        )
        self.holding = kept
        return None if kept else HELD

    async def release(self) -> None:
        await self.deliveries.release(self.message_id, self.owner, self.clock())

    async def finish(self, status: str, reason: str | None = None) -> str:
        try:
            return await self.write(status, reason)
        except Unavailable as exc:
            raise Unrecorded(status, lambda: self.write(status, reason)) from exc

    async def write(self, status: str, reason: str | None) -> str:
        now = self.clock()
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "channel": self.channel,
            "template": self.template,
        }
        if reason is not None:
            data["reason"] = reason[:MAX_ERROR]
        kind = events.MESSAGE_SENT if status == SENT else events.MESSAGE_ABANDONED
        event: OutboxMessage = events.user_event(kind, self.key, data, now)
        error = self.error if status == SENT else (reason or self.error)
        written = await self.deliveries.record(
            self.message_id, status, self.channel, self.attempts, error, event, now, self.owner
        )
        self.holding = False
        if not written:
            # Another courier recorded an outcome first (it took over a lease that expired
            # while this one was still at work): theirs stands, with its one event.
            log.warning(
                "delivery %s: an outcome was recorded by another courier first%s",
                self.message_id,
                "; this copy was sent too" if status == SENT else "",
            )
            return DUPLICATE
        if status == SENT:
            log.info("delivery %s sent via %s", self.message_id, self.channel)
        else:
            log.warning("delivery %s abandoned: %s", self.message_id, reason)
        return status
