"""The relay: publishes outbox rows to Kafka (or the in-process bus), in order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

import orjson

from gatehouse.ports import Clock, EventPublisher, OutboxRecord, OutboxStore, Published

log = logging.getLogger(__name__)
PRUNE_EVERY = 600.0
KEEP_PUBLISHED = timedelta(days=1)


def to_published(record: OutboxRecord) -> Published:
    message = record.message
    content_type = (
        "application/cloudevents+json" if "specversion" in message.payload else "application/json"
    )
    return Published(
        topic=message.topic,
        key=message.key,
        value=orjson.dumps(message.payload),
        headers={"id": message.id, "content-type": content_type},
    )


class Relay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        batch: int,
        interval: float,
        clock: Clock,
    ):
        self._store, self._publisher, self._clock = store, publisher, clock
        self._batch, self._interval = batch, interval
        self.published = 0

    async def _publish(self, records: Sequence[OutboxRecord]) -> None:
        await self._publisher.publish([to_published(r) for r in records])

    async def run_once(self) -> int:
        count = await self._store.claim(self._batch, self._publish)
        self.published += count
        return count

    async def run(self, stop: asyncio.Event) -> None:
        await self._publisher.start()
        backoff = self._interval
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + PRUNE_EVERY
        log.info("relay started")
        while not stop.is_set():
            try:
                count = await self.run_once()
                backoff = self._interval
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY
                    await self._prune()
            except Exception as exc:
                # Kafka or the database is down: nothing was marked, so nothing is lost. Back off.
                log.warning("relay: publish failed, retrying in %.1fs: %s", backoff, exc)
                count = 0
                backoff = min(backoff * 2 if backoff >= 0.5 else 0.5, 10.0)
            if count < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
        await self._publisher.close()
        log.info("relay stopped after publishing %d records", self.published)

    async def _prune(self) -> None:
        pruned = await self._store.prune(self._clock() - KEEP_PUBLISHED)
        if pruned:
            log.info("relay pruned %d published outbox rows", pruned)
