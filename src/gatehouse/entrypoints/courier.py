"""The courier: consumes `send-otp` and delivers each message through its channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gatehouse.domain.crypto import Keyring
from gatehouse.errors import Unavailable
from gatehouse.flows.delivery import ABANDONED, deliver
from gatehouse.ports import Channel, Clock, Delivery, DeliveryLog, DeliverySource, Renderer

log = logging.getLogger(__name__)


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
        # `duplicate` appears once a redelivered command is met.
        self.outcomes: dict[str, int] = {"sent": 0, "abandoned": 0}

    async def handle(self, delivery: Delivery) -> str:
        """Deliver (retries, fallbacks and the record are the flow's), then acknowledge.

        While the database is unreachable the command is kept and tried again: it is
        acknowledged only once its outcome is recorded (at least once; the record de-duplicates)."""
        pause = max(self._first_backoff, 0.1)
        while True:
            try:
                outcome = await deliver(
                    delivery.value,
                    keyring=self._keyring,
                    renderer=self._renderer,
                    channels=self._channels,
                    clock=self._clock,
                    deliveries=self._deliveries,
                    key=delivery.key,
                    attempts=self._attempts,
                    first_backoff=self._first_backoff,
                )
                break
            except Unavailable as exc:
                log.warning("delivery log unavailable (%s): trying again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
            except Exception:
                # A bug must not stop the courier on one poison message: drop it, loudly.
                log.exception("delivery failed unexpectedly: abandoned")
                outcome = ABANDONED
                break
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        await delivery.ack()
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        log.info("courier started with channels: %s", ", ".join(sorted(self._channels)) or "none")

        async def consume() -> None:
            async for delivery in self._source.deliveries():
                await self.handle(delivery)

        task = asyncio.create_task(consume())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stopper):
                t.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
            await self._source.close()
        log.info("courier stopped: %s", self.outcomes)
