"""The webhooks' consumer of `user-events`: each event becomes one delivery row per endpoint that
wants it (what has arrived is written a batch at a time), then its offset is committed. Nothing
is posted here: delivery runs from the database (`webhooks/delivery.py`), so a slow endpoint
never holds the topic back."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from gatehouse.domain.webhooks import PENDING, Endpoint, WebhookDelivery
from gatehouse.errors import Unavailable
from gatehouse.ports import Clock, Delivery, DeliverySource
from gatehouse.ports.webhooks import WebhookStore

log = logging.getLogger(__name__)


def parse_event(raw: bytes, key: str | None) -> tuple[str, str, str] | None:
    """(id, type, user key) of a CloudEvent; None for a record that is not one."""
    try:
        event: Any = json.loads(raw)
        event_id, kind = event["id"], event["type"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(event_id, str) or not isinstance(kind, str) or len(event_id) > 64:
        return None
    subject = event.get("subject") if isinstance(event.get("subject"), str) else None
    return event_id, kind[:100], (key or subject or event_id)[:200]


class Dispatcher:
    """Reads `source`, writes the deliveries, acknowledges; `wake` tells the delivery loop of
    this process that new work is there. What has arrived is written a batch at a time (up to
    `batch` events: one read of the endpoints, one INSERT), then acknowledged in order. While
    the database is away the batch is tried again (backing off), never acknowledged before its
    rows are written."""

    def __init__(
        self,
        source: DeliverySource,
        store: WebhookStore,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        max_pause: float = 10.0,
        batch: int = 200,
    ):
        self._source, self._store, self._clock, self._wake = source, store, clock, wake
        self._max_pause, self._batch = max_pause, batch
        self.events = 0

    async def handle(self, delivery: Delivery) -> int:
        return await self.handle_batch([delivery])

    def _rows(self, batch: Sequence[Delivery], endpoints: list[Endpoint]) -> list[WebhookDelivery]:
        now, rows = self._clock(), []
        for delivery in batch:
            parsed = parse_event(delivery.value, delivery.key)
            if parsed is None:
                log.warning("user-events record at offset %s is not a CloudEvent", delivery.offset)
                continue
            event_id, kind, user_key = parsed
            body = delivery.value.decode("utf-8", errors="replace")
            rows += [
                WebhookDelivery(
                    0,
                    str(uuid.uuid4()),
                    endpoint.id,
                    event_id,
                    kind,
                    user_key,
                    body,
                    PENDING,
                    0,
                    None,
                    None,
                    None,
                    now,
                    now,
                    None,
                    now,
                )
                for endpoint in endpoints
                if endpoint.wants(kind)
            ]
        return rows

    async def handle_batch(self, batch: Sequence[Delivery]) -> int:
        """Write the deliveries of `batch` (in its order: a user's events keep theirs), then
        acknowledge each record: how many deliveries were added."""
        pause = 0.2
        while True:
            try:
                added = await self._store.enqueue(self._rows(batch, await self._store.active()))
                break
            except Unavailable as exc:
                log.warning("webhook store unavailable (%s): again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
        for delivery in batch:
            await delivery.ack()
        self.events += len(batch)
        if added:
            self._wake()
        return added

    async def run(self, stop: asyncio.Event) -> None:
        arrived: asyncio.Queue[Delivery] = asyncio.Queue(self._batch * 2)

        async def consume() -> None:
            async for delivery in self._source.deliveries():
                if stop.is_set():
                    break
                await arrived.put(delivery)

        async def write() -> None:
            while True:
                batch = [await arrived.get()]
                while len(batch) < self._batch and not arrived.empty():
                    batch.append(arrived.get_nowait())
                await self.handle_batch(batch)

        tasks = [asyncio.create_task(consume()), asyncio.create_task(write())]
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (*tasks, stopper):
                t.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await self._source.close()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
