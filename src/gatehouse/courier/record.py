"""The courier's record of each message: its lease, its failed tries, its outcome with the event."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gatehouse.courier.delivery import (
    MAX_ERROR,
    Abandoned,
    Done,
    History,
    Result,
    RetryLater,
    Sent,
)
from gatehouse.domain import events
from gatehouse.ports import FINAL, Clock, DeliveryLog, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ledger:
    """Writes one courier's deliveries through the `DeliveryLog`: leases are taken in its name
    (`owner`) for `lease` at a time, which must outlast one provider call. Every method raises
    `errors.Unavailable` when the log cannot be reached."""

    deliveries: DeliveryLog
    clock: Clock
    owner: str
    lease: timedelta

    async def claim(self, message_id: str) -> History | Result:
        """Take the lease, or renew it: the history on record when this courier holds it, else
        `DUPLICATE` (an outcome is recorded) or `HELD` (another courier's lease is live)."""
        now = self.clock()
        claim = await self.deliveries.claim(message_id, self.owner, now, now + self.lease)
        if claim.won:
            return History(attempts=claim.record.attempts)
        if claim.record.status in FINAL:
            log.info("delivery %s already %s: not sent again", message_id, claim.record.status)
            return Result.DUPLICATE
        log.info(
            "delivery %s is leased to %s until %s: left to it",
            message_id,
            claim.record.lease_owner,
            claim.record.lease_until,
        )
        return Result.HELD

    async def progress(self, message_id: str, outcome: RetryLater) -> bool:
        """Write the failed try down, while the lease is ours: False when it was lost."""
        history = outcome.history
        return await self.deliveries.record(
            message_id,
            Status.SENDING,
            history.channel,
            history.attempts,
            history.error,
            None,
            self.clock(),
            owner=self.owner,
        )

    async def release(self, message_id: str) -> None:
        """Give the lease back (`queued`), so the next courier need not wait for it to expire."""
        await self.deliveries.release(message_id, self.owner, self.clock())

    async def finish(self, outcome: Done, *, message_id: str, key: str, template: str) -> Result:
        """Record the outcome with its event (keyed by `key`); `DUPLICATE` when another courier
        recorded one first."""
        now = self.clock()
        history = outcome.history
        channel: str | None
        reason: str | None
        if isinstance(outcome, Sent):
            status, kind, channel, reason = Status.SENT, events.MESSAGE_SENT, outcome.channel, None
        else:
            status, kind, channel = Status.ABANDONED, events.MESSAGE_ABANDONED, history.channel
            reason = outcome.reason
        data: dict[str, Any] = {"message_id": message_id, "channel": channel, "template": template}
        if reason is not None:
            data["reason"] = reason[:MAX_ERROR]
        event = events.user_event(kind, key, data, now)
        # A sent message keeps on record the failure that made it fall back, if any.
        error = reason or history.error
        written = await self.deliveries.record(
            message_id, status, channel, history.attempts, error, event, now, self.owner
        )
        if not written:
            # Another courier recorded an outcome first (it took over a lease that expired
            # while this one was still at work): theirs stands, with its one event.
            log.warning(
                "delivery %s: an outcome was recorded by another courier first%s",
                message_id,
                "; this copy was sent too" if status is Status.SENT else "",
            )
            return Result.DUPLICATE
        if isinstance(outcome, Abandoned):
            log.warning("delivery %s abandoned: %s", message_id, outcome.reason)
            return Result.ABANDONED
        log.info("delivery %s sent via %s", message_id, channel)
        return Result.SENT
