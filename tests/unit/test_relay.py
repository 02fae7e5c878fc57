"""entrypoints.relay over MemoryOutboxStore + MemoryBus: in order, at least once, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import orjson
import pytest

from gatehouse.domain import events
from gatehouse.domain.events import OutboxMessage
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.relay import Relay
from gatehouse.ports import Published
from tests.fakes import MemoryDatabase, MemoryOutboxStore

from .helpers import FakeClock


class FailingPublisher(MemoryBus):
    """A bus that refuses the next `failures` batches, as Kafka does when it is down."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def publish(self, records: Sequence[Published]) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker down")
        await super().publish(records)


async def write(db: MemoryDatabase, *messages: OutboxMessage) -> None:
    async with db.uow() as uow:
        for message in messages:
            await uow.outbox.add(message)
        await uow.commit()


def sample(clock: FakeClock) -> list[OutboxMessage]:
    now = clock.now
    return [
        events.user_event(events.REGISTERED, "user-1", {"email": "a@example.com"}, now),
        events.delivery(
            key="user-1",
            channel="email",
            to="a@example.com",
            template="verify-email",
            now=now,
            expires_at=now + timedelta(minutes=10),
            code_ciphertext="v1.k.ciphertext",
        ),
        events.user_event(events.VERIFIED, "user-1", {"email": "a@example.com"}, now),
        events.user_event(events.LOGGED_IN, "user-2", {"factor": "password"}, now),
    ]


def relay(db: MemoryDatabase, publisher: MemoryBus, clock: FakeClock, batch: int = 100) -> Relay:
    return Relay(MemoryOutboxStore(db, clock), publisher, batch=batch, interval=0.01, clock=clock)


async def test_publishes_in_order_and_only_once(db: MemoryDatabase, clock: FakeClock) -> None:
    messages = sample(clock)
    await write(db, *messages)
    bus = MemoryBus()
    r = relay(db, bus, clock)

    assert await r.run_once() == len(messages)
    assert [p.headers["id"] for p in bus.published] == [m.id for m in messages]
    assert [p.topic for p in bus.published] == [m.topic for m in messages]
    assert [orjson.loads(p.value) for p in bus.published] == [m.payload for m in messages]
    assert await MemoryOutboxStore(db, clock).pending_count() == 0

    assert await r.run_once() == 0
    assert len(bus.published) == len(messages)
    assert r.published == len(messages)


async def test_rows_are_marked_with_the_publish_time(db: MemoryDatabase, clock: FakeClock) -> None:
    await write(db, *sample(clock))
    clock.advance(5)
    await relay(db, MemoryBus(), clock).run_once()
    assert {published for _seq, _m, published in db.tables.outbox} == {clock.now}


async def test_batches_keep_the_order(db: MemoryDatabase, clock: FakeClock) -> None:
    messages = sample(clock)
    await write(db, *messages)
    bus = MemoryBus()
    r = relay(db, bus, clock, batch=3)
    assert [await r.run_once() for _ in range(3)] == [3, 1, 0]
    assert [p.headers["id"] for p in bus.published] == [m.id for m in messages]


async def test_later_rows_follow_earlier_ones(db: MemoryDatabase, clock: FakeClock) -> None:
    first, second = sample(clock)[:2], sample(clock)[2:]
    bus = MemoryBus()
    r = relay(db, bus, clock)
    await write(db, *first)
    await r.run_once()
    await write(db, *second)
    assert await r.run_once() == len(second)
    assert [p.headers["id"] for p in bus.published] == [m.id for m in first + second]


async def test_failed_publish_leaves_rows_for_the_next_run(
    db: MemoryDatabase, clock: FakeClock
) -> None:
    messages = sample(clock)
    await write(db, *messages)
    publisher = FailingPublisher(failures=2)
    r = relay(db, publisher, clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await r.run_once()
        assert await MemoryOutboxStore(db, clock).pending_count() == len(messages)
        assert list(publisher.published) == []
    assert await r.run_once() == len(messages)
    assert [p.headers["id"] for p in publisher.published] == [m.id for m in messages]
    assert await MemoryOutboxStore(db, clock).pending_count() == 0


async def test_cloudevents_headers_and_keys(db: MemoryDatabase, clock: FakeClock) -> None:
    messages = sample(clock)
    await write(db, *messages)
    bus = MemoryBus()
    await relay(db, bus, clock).run_once()
    by_id = {p.headers["id"]: p for p in bus.published}
    for message in messages:
        published = by_id[message.id]
        if message.topic == events.USER_EVENTS:
            assert published.headers["content-type"] == "application/cloudevents+json"
            assert published.key == message.payload["subject"] == message.payload["data"]["user_id"]
            body = orjson.loads(published.value)
            assert {"id", "source", "type", "time", "subject", "data", "specversion"} <= set(body)
        else:
            assert published.topic == events.SEND_OTP
            assert published.headers["content-type"] == "application/json"
            assert published.key == "user-1"


async def test_uncommitted_rows_are_never_published(db: MemoryDatabase, clock: FakeClock) -> None:
    with pytest.raises(RuntimeError):
        async with db.uow() as uow:
            await uow.outbox.add(sample(clock)[0])
            raise RuntimeError("the flow failed after writing")
    bus = MemoryBus()
    assert await relay(db, bus, clock).run_once() == 0
    assert list(bus.published) == []


async def test_prune_removes_only_old_published_rows(db: MemoryDatabase, clock: FakeClock) -> None:
    await write(db, *sample(clock)[:2])
    store = MemoryOutboxStore(db, clock)
    await relay(db, MemoryBus(), clock).run_once()
    clock.advance(3600)
    await write(db, sample(clock)[2])  # unpublished: must survive any prune
    assert await store.prune(clock.now - timedelta(hours=2)) == 0
    assert await store.prune(clock.now) == 2
    assert len(db.tables.outbox) == 1
    assert await store.pending_count() == 1


async def test_run_publishes_until_stopped_and_survives_a_broker_outage(
    db: MemoryDatabase, clock: FakeClock
) -> None:
    messages = sample(clock)
    await write(db, *messages)
    publisher = FailingPublisher(failures=1)
    r = relay(db, publisher, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    got: list[str] = []

    async def consume() -> None:
        async for delivery in publisher.source(events.USER_EVENTS).deliveries():
            got.append(orjson.loads(delivery.value)["id"])
            await delivery.ack()
            if len(got) == 3:
                return

    await asyncio.wait_for(consume(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert got == [m.id for m in messages if m.topic == events.USER_EVENTS]
    assert publisher.calls >= 2
    assert await MemoryOutboxStore(db, clock).pending_count() == 0
