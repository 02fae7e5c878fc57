"""The in-process event bus: `gatehouse serve` without Kafka (topics as in-memory logs)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence

from gatehouse.ports import (
    Delivery,
    Published,
)


class _Topic:
    """One topic: the records no consumer has taken yet, oldest first, each with its offset
    (its place in the topic, as Kafka numbers a partition's records)."""

    def __init__(self) -> None:
        self._ready: deque[tuple[int, Published]] = deque()
        self._next = 0
        self._arrived = asyncio.Event()

    def append(self, record: Published) -> None:
        self._ready.append((self._next, record))
        self._next += 1
        self._arrived.set()

    def put_back(self, records: dict[int, Published]) -> None:
        """Records taken but never acknowledged, back ahead of the rest, in their order."""
        self._ready.extendleft(sorted(records.items(), key=lambda r: r[0], reverse=True))
        if records:
            self._arrived.set()

    async def take(self) -> tuple[int, Published]:
        while not self._ready:
            self._arrived.clear()
            await self._arrived.wait()
        return self._ready.popleft()


class MemoryBus:
    """The in-process stand-in for Kafka: the relay publishes, the courier consumes. `topics`
    are made at once (the others when first used), as Kafka topics are made at start."""

    def __init__(self, topics: Sequence[str] = ()) -> None:
        self._topics: dict[str, _Topic] = {}
        # The last records, for tests and debugging; bounded so a long-running serve does not grow.
        self.published: deque[Published] = deque(maxlen=10_000)
        for topic in topics:
            self._topic(topic)

    def _topic(self, topic: str) -> _Topic:
        return self._topics.setdefault(topic, _Topic())

    @property
    def topics(self) -> list[str]:
        return sorted(self._topics)

    async def start(self) -> None:
        return None

    async def publish(self, records: Sequence[Published]) -> None:
        for record in records:
            self.published.append(record)
            self._topic(record.topic).append(record)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def source(self, topic: str) -> MemorySource:
        return MemorySource(self._topic(topic), topic)


class MemorySource:
    """One consumer of a topic (several share its records, as the members of a Kafka consumer
    group do). What it took and did not acknowledge goes back to the topic when it closes, for
    the next consumer, as Kafka delivers again what was never committed."""

    def __init__(self, topic: _Topic, name: str):
        self._topic, self._name = topic, name
        self._in_hand: dict[int, Published] = {}  # taken, not yet acknowledged, by offset

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while True:
            offset, record = await self._topic.take()
            self._in_hand[offset] = record

            async def ack(offset: int = offset) -> None:
                self._in_hand.pop(offset, None)

            yield Delivery(record.value, ack, record.key, self._name, 0, offset, record.headers)

    async def close(self) -> None:
        self._topic.put_back(self._in_hand)
        self._in_hand = {}
