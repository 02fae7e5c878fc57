"""The courier: consumes `send-otp`, delivers each message through its channel under a lease, and
sends what it cannot process at all to the dead-letter topic (`send-otp.dlq`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from gatehouse.courier.delivery import Undeliverable, Unreadable, deliver
from gatehouse.courier.record import HELD, Unrecorded
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.errors import Unavailable
from gatehouse.ports import (
    Channel,
    Clock,
    Delivery,
    DeliveryLog,
    DeliverySource,
    EventPublisher,
    Published,
    Renderer,
)

log = logging.getLogger(__name__)
DEAD_LETTERED = "dead-lettered"


def courier_name() -> str:
    """This courier's name in the leases it takes: host, process and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Courier:
    def __init__(
        self,
        source: DeliverySource,
        *,
        keyring: Keyring,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        clock: Clock,
        attempts: int = 5,
        first_backoff: float = 0.5,
        deliveries: DeliveryLog | None = None,
        max_pause: float = 30.0,
        dead_letters: EventPublisher | None = None,
        dead_letter_topic: str = events.SEND_OTP_DLQ,
        owner: str | None = None,
        lease: float = 60.0,
        retry_budget: float = 120.0,
        held_pause: float = 1.0,
        stop_grace: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._source = source
        self._keyring, self._renderer, self._channels, self._clock = (
            keyring,
            renderer,
            channels,
            clock,
        )
        self._attempts, self._first_backoff = attempts, first_backoff
        self._deliveries, self._max_pause = deliveries, max_pause
        self._dead_letters, self._dead_letter_topic = dead_letters, dead_letter_topic
        self.owner = owner or courier_name()
        self._lease = timedelta(seconds=lease)
        self._budget, self._held_pause, self._stop_grace = retry_budget, held_pause, stop_grace
        self._monotonic = monotonic
        # `duplicate` and `dead-lettered` appear once one is met.
        self.outcomes: dict[str, int] = {"sent": 0, "abandoned": 0}

    async def _deliver(self, delivery: Delivery) -> str:
        return await deliver(
            delivery.value,
            keyring=self._keyring,
            renderer=self._renderer,
            channels=self._channels,
            clock=self._clock,
            deliveries=self._deliveries,
            key=delivery.key,
            attempts=self._attempts,
            first_backoff=self._first_backoff,
            owner=self.owner,
            lease=self._lease,
        )

    async def handle(self, delivery: Delivery) -> str:
        """Deliver (retries, fallbacks, the lease and the record are the flow's), then
        acknowledge: only once the outcome is recorded or the command is in the dead-letter topic.

        While another courier's live lease holds the message, it is left to that courier: this
        one polls until that outcome is recorded, or the lease expires and it takes over. While
        the database is unreachable the command is tried again, backing off, for `retry_budget`
        seconds, then dead-lettered, so one command cannot block its partition for ever."""
        deadline = self._monotonic() + self._budget
        pause = max(self._first_backoff, 0.1)
        attempt: Callable[[], Awaitable[str]] = lambda: self._deliver(delivery)  # noqa: E731
        while True:
            try:
                outcome = await attempt()
                if outcome != HELD:
                    break
                await asyncio.sleep(self._held_pause)
                continue
            except Unrecorded as exc:
                # Sent (or given up) but not written down: retry the record only, never the send.
                attempt, failure = exc.retry, exc.__cause__ or exc
            except Unavailable as exc:
                failure = exc
            except Unreadable as exc:
                outcome = await self._dead_letter(delivery, exc)
                break
            except Exception as exc:
                # A bug must not stop the courier on one poison message: set it aside, loudly.
                log.exception("delivery failed unexpectedly")
                outcome = await self._dead_letter(delivery, exc)
                break
            if self._monotonic() >= deadline:
                outcome = await self._dead_letter(delivery, failure)
                break
            log.warning("delivery log unavailable (%s): trying again in %.1fs", failure, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._max_pause)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        await delivery.ack()
        return outcome

    async def _dead_letter(self, delivery: Delivery, error: BaseException) -> str:
        """Publish the command as it came (its code still sealed) with where it came from and
        why; returns only once the dead-letter topic has it, so the ack that follows loses
        nothing."""
        headers = {
            "dlq-original-topic": delivery.topic,
            "dlq-original-partition": str(delivery.partition),
            "dlq-original-offset": str(delivery.offset),
            "dlq-error-class": type(error).__name__,
            "dlq-failed-at": self._clock().isoformat(),
        }
        # Our own reasons hold no secret; another exception's text might, so only its class.
        if isinstance(error, Undeliverable | Unavailable):
            headers["dlq-error"] = str(error)[:200]
        where = f"{delivery.topic or '?'}[{delivery.partition}]@{delivery.offset}"
        if self._dead_letters is None:
            log.error("command at %s dropped (%s): no dead-letter topic", where, type(error))
            return DEAD_LETTERED
        record = Published(self._dead_letter_topic, delivery.key or "", delivery.value, headers)
        pause = max(self._first_backoff, 0.1)
        while True:
            try:
                await self._dead_letters.publish([record])
                break
            except Exception as exc:
                log.warning("dead letter not published (%s): trying again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
        log.warning(
            "command at %s dead-lettered to %s: %s",
            where,
            self._dead_letter_topic,
            headers.get("dlq-error", headers["dlq-error-class"]),
        )
        return DEAD_LETTERED

    async def _close_channels(self) -> None:
        """Channels that keep connections open (SMTP) say goodbye to their servers."""
        for channel in self._channels.values():
            close = getattr(channel, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # the process is stopping: nothing is lost
                    log.debug("channel %s not closed cleanly: %s", channel.name, exc)

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "courier %s started with channels: %s",
            self.owner,
            ", ".join(sorted(self._channels)) or "none",
        )
        idle = asyncio.Event()
        idle.set()
        if self._dead_letters is not None:
            await self._dead_letters.start()

        async def consume() -> None:
            async for delivery in self._source.deliveries():
                if stop.is_set():
                    break  # left unacknowledged: delivered again to the next courier
                idle.clear()
                try:
                    await self.handle(delivery)
                finally:
                    idle.set()

        task = asyncio.create_task(consume())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not idle.is_set():
                # A message is in hand: let it finish (its provider call and its record) rather
                # than cut it mid-send, which would leave it to be sent again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), self._stop_grace)
        finally:
            for t in (task, stopper):
                t.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
            await self._source.close()
            if self._dead_letters is not None:
                await self._dead_letters.close()
            await self._close_channels()
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
        log.info("courier stopped: %s", self.outcomes)
