"""The relay's outbox store on SQLite, PostgreSQL and MariaDB alike: a batch marks exactly the
rows it published (one array parameter on PostgreSQL, a list elsewhere), never a row it did not
see, however the sequence numbers interleave; payloads come back as they were written."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.domain import events
from gatehouse.domain.events import OutboxMessage
from gatehouse.ports import OutboxRecord, OutboxStore
from gatehouse.storage import sql
from gatehouse.storage.schema import outbox
from tests.integration.conftest import CUT_OUR_CONNECTIONS, OutboxStores, Units

NOW = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)


async def published_seqs(engine: AsyncEngine) -> tuple[list[int], list[int]]:
    """(sequence numbers marked published, those still to publish)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.seq, outbox.c.published_at))).all()
    return (
        sorted(seq for seq, at in rows if at is not None),
        sorted(seq for seq, at in rows if at is None),
    )


async def write_events(units: Units, count: int, users: int = 1) -> None:
    """`count` user events in one transaction, `data.n` numbering them from 0, over `users`
    users (u-0, u-1, ...)."""
    async with units() as uow:
        for i in range(count):
            event = events.user_event(events.VERIFIED, f"u-{i % users}", {"n": i}, NOW)
            await uow.outbox.add(event)
        await uow.commit()


async def test_each_batch_marks_exactly_the_rows_it_published(
    outbox_stores: OutboxStores, engine: AsyncEngine, units: Units
) -> None:
    await write_events(units, 1_203, users=7)
    store = outbox_stores()
    batches: list[list[int]] = []

    async def collect(records: Sequence[OutboxRecord]) -> None:
        batches.append([r.seq for r in records])

    assert await store.claim(500, collect) == 500
    marked, left = await published_seqs(engine)
    assert marked == batches[0] and len(left) == 703
    while await store.claim(500, collect):
        pass
    assert [len(b) for b in batches] == [500, 500, 203]
    marked, left = await published_seqs(engine)
    assert marked == [seq for batch in batches for seq in batch] and left == []


async def test_a_row_committed_during_a_batch_between_its_rows_is_not_marked(
    outbox_stores: OutboxStores,
    backend_database: tuple[str, str],
    engine: AsyncEngine,
    units: Units,
) -> None:
    """On PostgreSQL a row numbered between a batch's rows can commit while the batch is being
    published: the batch must not mark it (a range of numbers would have, unpublished). InnoDB's
    locking read waits for that row's transaction instead, and SQLite has one writer at a time,
    so this interleaving exists on PostgreSQL only."""
    backend, _ = backend_database
    if not backend.startswith("postgres"):
        return
    store = outbox_stores()
    seen: list[str] = []
    async with units() as fast, units() as slow:
        await fast.outbox.add(events.user_event(events.VERIFIED, "u-1", {"n": "first"}, NOW))
        await slow.outbox.add(events.user_event(events.VERIFIED, "u-2", {"n": "between"}, NOW))
        await fast.outbox.add(events.user_event(events.VERIFIED, "u-3", {"n": "third"}, NOW))
        await fast.commit()

        async def publish_while_the_other_commits(records: Sequence[OutboxRecord]) -> None:
            seen.extend(r.message.payload["data"]["n"] for r in records)
            await slow.commit()

        assert await store.claim(10, publish_while_the_other_commits) == 2
    marked, left = await published_seqs(engine)
    assert seen == ["first", "third"]
    assert len(left) == 1 and marked[0] < left[0] < marked[1]

    async def collect(records: Sequence[OutboxRecord]) -> None:
        seen.extend(r.message.payload["data"]["n"] for r in records)

    assert await store.claim(10, collect) == 1
    assert seen == ["first", "third", "between"]
    assert await store.pending_count() == 0


async def test_payloads_come_back_as_written(
    outbox_stores: OutboxStores, engine: AsyncEngine
) -> None:
    payloads = [
        {"name": "Zoë Ångström", "emoji": "🔐", "nested": {"list": [1, 2.5, None, True]}},
        {"big": 2**70, "neg": -(2**63)},  # beyond 64 bits: orjson refuses, json reads it
        {"nan": math.nan},  # what json.dumps writes and orjson refuses
    ]
    async with sql.SqlUnitOfWork(engine) as uow:
        for i, payload in enumerate(payloads):
            await uow.outbox.add(OutboxMessage(f"m-{i}", "t", "k", payload, NOW))
        await uow.commit()
    store = outbox_stores()
    got: list[OutboxRecord] = []

    async def collect(records: Sequence[OutboxRecord]) -> None:
        got.extend(records)

    assert await store.claim(10, collect) == 3
    assert [r.message.payload for r in got[:2]] == payloads[:2]
    assert math.isnan(got[2].message.payload["nan"])
    assert all(r.message.created_at == NOW for r in got)
    assert [(r.message.id, r.message.topic, r.message.key) for r in got] == [
        ("m-0", "t", "k"),
        ("m-1", "t", "k"),
        ("m-2", "t", "k"),
    ]
    assert json.dumps(got[0].message.payload, ensure_ascii=False).count("Zoë") == 1


async def test_relays_polling_together_publish_each_row_once_in_order(
    outbox_stores: OutboxStores, engine: AsyncEngine, units: Units
) -> None:
    """Four relays drain one outbox at once: each row published once, in order, and no batch
    fails on the way. (InnoDB used to deadlock two relays' locking reads and updates, above all
    over rows deleted but not yet purged, as the relay's pruning leaves them.)"""
    await write_events(units, 1_200)

    while await outbox_stores().claim(500, nothing):
        pass
    assert await outbox_stores().prune(NOW + timedelta(seconds=1)) == 1_200
    await write_events(units, 600, users=5)
    stores = [outbox_stores() for _ in range(4)]
    published: list[int] = []

    async def collect(records: Sequence[OutboxRecord]) -> None:
        await asyncio.sleep(0)
        published.extend(r.message.payload["data"]["n"] for r in records)

    async def drain(store: OutboxStore) -> None:
        while await store.claim(16, collect):
            pass

    await asyncio.gather(*(drain(s) for s in stores))
    assert published == list(range(600))
    assert await stores[0].pending_count() == 0


async def test_a_failed_batch_leaves_the_next_relay_its_turn(
    outbox_stores: OutboxStores, engine: AsyncEngine, units: Units
) -> None:
    """The turn (MariaDB's named lock, PostgreSQL's row locks) ends with a failed batch too: the
    next relay, on another connection, publishes at once what the failed one could not."""
    await write_events(units, 5)

    async def kafka_down(records: Sequence[OutboxRecord]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await outbox_stores().claim(10, kafka_down)
    published: list[int] = []

    async def collect(records: Sequence[OutboxRecord]) -> None:
        published.extend(r.message.payload["data"]["n"] for r in records)

    other = outbox_stores()
    assert await asyncio.wait_for(other.claim(10, collect), 5) == 5
    assert published == [0, 1, 2, 3, 4]


async def test_a_second_relay_waits_for_the_first_ones_batch(
    outbox_stores: OutboxStores, engine: AsyncEngine, units: Units
) -> None:
    await write_events(units, 6)
    batches: list[list[int]] = []
    first_in_hand, let_go = asyncio.Event(), asyncio.Event()

    async def slow(records: Sequence[OutboxRecord]) -> None:
        first_in_hand.set()
        await let_go.wait()
        batches.append([r.message.payload["data"]["n"] for r in records])

    async def fast(records: Sequence[OutboxRecord]) -> None:
        batches.append([r.message.payload["data"]["n"] for r in records])

    first = asyncio.create_task(outbox_stores().claim(3, slow))
    await first_in_hand.wait()
    second = asyncio.create_task(outbox_stores().claim(3, fast))
    await asyncio.sleep(0.2)  # time for the second to overtake, if it could (not a timing test)
    assert batches == []
    let_go.set()
    assert await first == 3 and await second == 3
    assert batches == [[0, 1, 2], [3, 4, 5]]


async def nothing(records: Sequence[OutboxRecord]) -> None:
    pass


async def test_a_poll_takes_no_sqlalchemy_connection_on_asyncpg(
    backend_database: tuple[str, str],
    outbox_stores: OutboxStores,
    engine: AsyncEngine,
    units: Units,
) -> None:
    """With the asyncpg pool, a poll that finds nothing is one statement there, and one that
    finds rows claims them there (`CLAIM`): never a connection of the engine's."""
    if backend_database[0] != "postgres-asyncpg":
        return
    taken: list[object] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda *args: taken.append(args))
    store = outbox_stores()
    for _ in range(5):
        assert await store.claim(10, nothing) == 0
    assert taken == []
    await write_events(units, 3)
    assert await store.claim(10, nothing) == 3
    assert taken == []
    assert (await published_seqs(engine))[1] == []


async def test_a_poll_after_the_database_cut_every_connection_publishes(
    backend_database: tuple[str, str],
    outbox_stores: OutboxStores,
    engine: AsyncEngine,
    units: Units,
) -> None:
    """The pooled connection the peek used died (the database restarted, its connections were
    cut): the next poll sends the peek again on a new one, and publishes what waits."""
    if backend_database[0] != "postgres-asyncpg":
        return
    store = outbox_stores()
    assert await store.claim(10, nothing) == 0  # the pool now holds a connection
    async with sql.autocommit(engine).connect() as conn:
        # at least the peek's connection
        assert (await conn.execute(text(CUT_OUR_CONNECTIONS))).scalar_one() >= 1
    await write_events(units, 4)
    published: list[int] = []

    async def collect(records: Sequence[OutboxRecord]) -> None:
        published.extend(r.message.payload["data"]["n"] for r in records)

    assert await store.claim(10, collect) == 4
    assert published == [0, 1, 2, 3]
