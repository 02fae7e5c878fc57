"""The courier: consumes `send-otp` and delivers each message through its channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gatehouse.domain.crypto import Keyring
from gatehouse.flows.delivery import deliver
from gatehouse.ports import Channel, ChannelError, Clock, Delivery, DeliverySource, Renderer

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
    ):
        self._source = source
        self._keyring, self._renderer, self._channels, self._clock = (
            keyring,
            renderer,
            channels,
            clock,
        )
        self._attempts, self._first_backoff = attempts, first_backoff
        self.outcomes: dict[str, int] = {"sent": 0, "abandoned": 0}

    async def handle(self, delivery: Delivery) -> str:
        """Deliver with bounded exponential backoff on transient failures, then acknowledge."""
        backoff = self._first_backoff
        outcome = "abandoned"
        for attempt in range(1, self._attempts + 1):
            try:
                outcome = await deliver(
                    delivery.value,
                    keyring=self._keyring,
                    renderer=self._renderer,
                    channels=self._channels,
                    clock=self._clock,
                )
                break
            except ChannelError as exc:
                log.warning("delivery attempt %d/%d failed: %s", attempt, self._attempts, exc)
                if attempt < self._attempts:
                    await asyncio.sleep(backoff)
                    backoff *= 2
        self.outcomes[outcome] += 1
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
