"""The webhooks' consumer of `user-events`: each event becomes one delivery row per endpoint that
wants it, then its offset is committed. Nothing is posted here: delivery runs from the database
(`webhooks/delivery.py`), so a slow endpoint never holds the topic back."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from gatehouse.domain.webhooks import PENDING, WebhookDelivery
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
    this process that new work is there. While the database is away the event is tried again
    (backing off), never acknowledged before its rows are written."""

    def __init__(
        self,
        source: DeliverySource,
        store: WebhookStore,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        max_pause: float = 10.0,
    ):
        self._source, self._store, self._clock, self._wake = source, store, clock, wake
        self._max_pause = max_pause
        self.events = 0

    async def handle(self, delivery: Delivery) -> int:
        parsed = parse_event(delivery.value, delivery.key)
        if parsed is None:
            log.warning("user-events record at offset %s is not a CloudEvent", delivery.offset)
            await delivery.ack()
            return 0
        event_id, kind, user_key = parsed
        body = delivery.value.decode("utf-8", errors="replace")
        pause = 0.2
        while True:
            try:
                now = self._clock()
                rows = [
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
                    for endpoint in await self._store.active()
                    if endpoint.wants(kind)
                ]
                added = await self._store.enqueue(rows)
                break
            except Unavailable as exc:
                log.warning("webhook store unavailable (%s): again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
        await delivery.ack()
        self.events += 1
        if added:
            self._wake()
        return added

    async def run(self, stop: asyncio.Event) -> None:
        async def consume() -> None:
            async for delivery in self._source.deliveries():
                if stop.is_set():
                    break
                await self.handle(delivery)

        task = asyncio.create_task(consume())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stopper):
                t.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
            await self._source.close()
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]
