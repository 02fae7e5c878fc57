"""The courier's loop: reads `send-otp`, has each command decided and recorded, acknowledges.

Each command's outcome is counted by channel (`gatehouse_deliveries_total`); with a tracer, its
handling is a `process send-otp` span, child of the relay's `publish` span whose context the
record's `traceparent` header carries (the provider call inside is the channel's span)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from asyncio import CancelledError
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from gatehouse.courier.dead_letters import DeadLetters
from gatehouse.courier.delivery import (
    Abandoned,
    Command,
    Done,
    History,
    Result,
    Retry,
    RetryLater,
    Sent,
    decide,
    parse,
)
from gatehouse.courier.record import Ledger
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.errors import Unavailable, Unreadable
from gatehouse.ports import (
    Channel,
    Clock,
    Delivery,
    DeliveryLog,
    DeliverySource,
    EventPublisher,
    Renderer,
)
from gatehouse.ports.telemetry import NO_METRICS, Metrics, Tracer

log = logging.getLogger(__name__)


def courier_name() -> str:
    """This courier's name in the leases it takes: host, process and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Patience:
    """How long one command may wait out an unreachable delivery log (until `deadline`, on the
    monotonic clock) before it is dead-lettered: pauses from `pause`, doubling to `max_pause`."""

    deadline: float
    pause: float
    max_pause: float
    monotonic: Callable[[], float]

    async def wait(self, failure: Unavailable) -> bool:
        """Wait the next pause; False, at once, when the budget is spent."""
        if self.monotonic() >= self.deadline:
            return False
        log.warning("delivery log unavailable (%s): trying again in %.1fs", failure, self.pause)
        await asyncio.sleep(self.pause)
        self.pause = min(self.pause * 2, self.max_pause)
        return True


class Courier:
    """Handles one command at a time: `delivery.decide` says what each try came to, the
    `record.Ledger` writes it down under the message's lease, and only then is it acknowledged.
    `attempts` and `first_backoff` are the retry policy per channel; `lease` must outlast one
    provider call; `retry_budget` is how long a command waits out a database outage."""

    def __init__(
        self,
        source: DeliverySource,
        *,
        keyring: Keyring,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        clock: Clock,
        deliveries: DeliveryLog,
        attempts: int = 5,
        first_backoff: float = 0.5,
        max_pause: float = 30.0,
        dead_letters: EventPublisher | None = None,
        dead_letter_topic: str = events.SEND_OTP_DLQ,
        owner: str | None = None,
        lease: float = 60.0,
        retry_budget: float = 120.0,
        held_pause: float = 1.0,
        stop_grace: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
        tracer: Tracer | None = None,
    ):
        self._source = source
        self._metrics, self._tracer = metrics, tracer
        self._channel: str | None = None  # the channel of the command in hand, once known
        self._keyring, self._renderer, self._channels = keyring, renderer, channels
        self._clock, self._retry = clock, Retry(attempts, first_backoff)
        self.owner = owner or courier_name()
        self._ledger = Ledger(deliveries, clock, self.owner, timedelta(seconds=lease))
        self._dead_letters = DeadLetters(
            dead_letters,
            dead_letter_topic,
            clock=clock,
            first_pause=first_backoff,
            max_pause=max_pause,
        )
        self._first_pause, self._max_pause = max(first_backoff, 0.1), max_pause
        self._budget, self._held_pause, self._stop_grace = retry_budget, held_pause, stop_grace
        self._monotonic = monotonic
        # `duplicate` and `dead-lettered` appear once one is met.
        self.outcomes: dict[Result, int] = {Result.SENT: 0, Result.ABANDONED: 0}

    def _patience(self) -> Patience:
        deadline = self._monotonic() + self._budget
        return Patience(deadline, self._first_pause, self._max_pause, self._monotonic)

    async def handle(self, delivery: Delivery) -> Result:
        if self._tracer is None:
            return await self._handle(delivery)
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.topic or "send-otp",
        }
        parent = delivery.headers or {}
        with self._tracer.span(
            f"process {delivery.topic or 'send-otp'}",
            kind="consumer",
            parent=parent,
            attributes=attributes,
        ) as span:
            result = await self._handle(delivery)
            span.set_attribute("gatehouse.delivery.outcome", str(result))
            return result

    async def _handle(self, delivery: Delivery) -> Result:
        """Deliver, then acknowledge: only once the outcome is recorded or the command is in the
        dead-letter topic.

        While another courier's live lease holds the message, it is left to that courier: this
        one polls until that outcome is recorded, or the lease expires and it takes over. While
        the database is unreachable the command is tried again, backing off, for `retry_budget`
        seconds, then dead-lettered, so one command cannot block its partition for ever."""
        patience = self._patience()
        result: Result | None = None
        self._channel = None
        while result is None:
            try:
                result = await self.deliver(delivery.value, delivery.key, patience)
            except Unavailable as exc:
                if not await patience.wait(exc):
                    result = await self._set_aside(delivery, exc)
            except Unreadable as exc:
                result = await self._set_aside(delivery, exc)
            except Exception as exc:
                # A bug must not stop the courier on one poison message: set it aside, loudly.
                log.exception("delivery failed unexpectedly")
                result = await self._set_aside(delivery, exc)
            if result is Result.HELD:
                result = None
                await asyncio.sleep(self._held_pause)
        self.outcomes[result] = self.outcomes.get(result, 0) + 1
        self._metrics.delivery(self._channel or "none", str(result))
        await delivery.ack()
        return result

    async def _set_aside(self, delivery: Delivery, error: BaseException) -> Result:
        await self._dead_letters.put(delivery, error)
        return Result.DEAD_LETTERED

    async def deliver(
        self, raw: bytes, key: str | None = None, patience: Patience | None = None
    ) -> Result:
        """One pass at one command: take its lease, decide try after try, record the outcome.
        `HELD` while another courier holds it. Raises `Unreadable` for a command that cannot be
        opened (recorded abandoned when it has an id), and `Unavailable` for a delivery log out
        of reach while nothing is sent (all of it can be done again)."""
        try:
            command = parse(raw, self._keyring, key)
        except Unreadable as exc:
            if exc.message_id is None:
                log.warning("delivery abandoned: %s", exc)
            else:
                # Nothing is sent, so a database outage here lets the whole command be tried
                # again (`Unavailable`), until it is recorded and then dead-lettered.
                abandoned, mid = Abandoned(str(exc), History()), exc.message_id
                await self._ledger.finish(
                    abandoned, message_id=mid, key=key or mid, template=exc.template
                )
            raise
        # De-duplication and exclusion on the message id: Kafka may deliver the same command
        # twice (a crash before the offset commit, a rebalance) or to two couriers; a recorded
        # outcome is final, and a live lease means another courier is at it.
        claimed = await self._ledger.claim(command.id)
        if isinstance(claimed, Result):
            return claimed
        outcome = await self._until_done(command, claimed)
        if isinstance(outcome, Result):
            return outcome
        # AT-LEAST-ONCE WINDOW. Once `Sent`, the provider has accepted the message; until that is
        # committed, a crash (or a database that stays down past the budget) leaves the lease to
        # expire and the command unacknowledged, and whoever takes it next sends it again. SMTP
        # and Twilio take no idempotency key, so this one window cannot be closed here: at most
        # one extra copy per message in flight (one per courier, which has one at a time).
        return await self._finish(command, outcome, patience or self._patience())

    async def _until_done(self, command: Command, history: History) -> Done | Result:
        """Decide until the outcome, writing down each failed try; the lease is renewed before
        every decision but the first, and once it is lost this courier stops (`HELD`)."""
        sending = False
        try:
            while True:
                sending = True
                outcome = await decide(
                    command,
                    history,
                    channels=self._channels,
                    keyring=self._keyring,
                    renderer=self._renderer,
                    clock=self._clock,
                    retry=self._retry,
                )
                sending = False
                self._channel = outcome.history.channel or self._channel
                if isinstance(outcome, Sent):
                    self._channel = outcome.channel
                if isinstance(outcome, Sent | Abandoned):
                    return outcome
                if outcome.history.channel is not None:  # a failed try: retried, or next route
                    again = "retry" if isinstance(outcome, RetryLater) else "fallback"
                    self._metrics.delivery(outcome.history.channel, again)
                if isinstance(outcome, RetryLater):
                    if not await self._ledger.progress(command.id, outcome):
                        return Result.HELD
                    await asyncio.sleep(outcome.after)
                # After a backoff the lease may have run out and been taken, or an outcome
                # recorded: then this courier stops here.
                renewed = await self._ledger.claim(command.id)
                if isinstance(renewed, Result):
                    return renewed
                history = outcome.history.resumed(renewed.attempts)
        except CancelledError:
            # Stopped between provider calls: give the message back so the next courier need
            # not wait for the lease. Stopped during one, the provider may have taken it: the
            # lease is left to expire, and the message to be sent again (the window above).
            if not sending:
                try:
                    await self._ledger.release(command.id)
                except Exception:  # the lease expires anyway
                    log.warning("delivery %s: lease not released", command.id)
            raise

    async def _finish(self, command: Command, outcome: Done, patience: Patience) -> Result:
        """Record the outcome; while the log is out of reach, the record is tried again, and
        only the record: the message must not be sent twice for want of one."""
        while True:
            try:
                return await self._ledger.finish(
                    outcome, message_id=command.id, key=command.key, template=command.template
                )
            except Unavailable as exc:
                if not await patience.wait(exc):
                    raise

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
            await self._dead_letters.close()
            await self._close_channels()
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
        counts = {str(result): n for result, n in self.outcomes.items()}
        log.info("courier stopped: %s", counts)
