"""The in-process event bus: `gatehouse serve` without Kafka (topics as in-memory logs)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from gatehouse.ports import (
    Delivery,
    Published,
)


class MemoryBus:
    """The in-process stand-in for Kafka: the relay publishes, the courier consumes. `topics`
    get their queue at once (the others when first used), as Kafka topics are made at start."""

    def __init__(self, topics: Sequence[str] = ()) -> None:
        self._queues: dict[str, asyncio.Queue[Published]] = {}
        # The last records, for tests and debugging; bounded so a long-running serve does not grow.
        self.published: deque[Published] = deque(maxlen=10_000)
        for topic in topics:
            self._queue(topic)

    def _queue(self, topic: str) -> asyncio.Queue[Published]:
        return self._queues.setdefault(topic, asyncio.Queue())

    @property
    def topics(self) -> list[str]:
        return sorted(self._queues)

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[Published]) -> None:
        for record in records:
            self.published.append(record)
            self._queue(record.topic).put_nowait(record)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def source(self, topic: str) -> MemorySource:
        return MemorySource(self._queue(topic), topic)


class MemorySource:
    def __init__(self, queue: asyncio.Queue[Published], topic: str = ""):
        self._queue, self._topic = queue, topic
        self._taken = 0  # what this source has read: its "offset", for dead-letter headers

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while True:
            record = await self._queue.get()
            done = self._queue.task_done

            async def ack(done: Callable[[], None] = done) -> None:
                done()

            self._taken += 1
            yield Delivery(record.value, ack, record.key, self._topic, 0, self._taken - 1)

    async def close(self) -> None:
        return None
