"""The delivery lease in SQL, on SQLite, PostgreSQL and MariaDB alike: of many couriers claiming
one message at once exactly one wins, whether the row is new (INSERT) or its lease has expired
(UPDATE); a live lease is renewed only by its holder; the first outcome recorded stands. Every
test here is written against the `DeliveryLog` port, so each runs on the `MemoryDeliveryLog` fake
of the courier's unit tests too (`[fake]`): the leases those tests rely on are SQL's."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from gatehouse.domain import events
from gatehouse.ports import Claim, DeliveryLog, OutboxStore
from tests.integration.conftest import NOW, RowCount, on_the_fake_too, published

LEASE = timedelta(seconds=60)
MESSAGE = "aaaaaaaa-2222-3333-4444-555555555555"
RACERS = 20


async def race(log: DeliveryLog, now: datetime) -> list[Claim]:
    """RACERS couriers claim MESSAGE at the same moment, each on its own connection in SQL."""
    start = asyncio.Event()

    async def one(i: int) -> Claim:
        await start.wait()
        return await log.claim(MESSAGE, f"courier-{i}", now, now + LEASE)

    tasks = [asyncio.create_task(one(i)) for i in range(RACERS)]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks)


def winners(claims: list[Claim]) -> list[str]:
    return [str(c.record.lease_owner) for c in claims if c.won]


@on_the_fake_too
async def test_one_of_many_claims_on_a_new_message_wins(
    log: DeliveryLog, delivery_rows: RowCount
) -> None:
    claims = await race(log, NOW)
    [winner] = winners(claims)
    # The losers read the winner's row: they know whom the message is left to, and until when.
    assert {(c.record.lease_owner, c.record.lease_until) for c in claims} == {(winner, NOW + LEASE)}
    assert await delivery_rows() == 1
    stored = await log.get(MESSAGE)
    assert stored is not None and (stored.status, stored.attempts) == ("sending", 0)


@on_the_fake_too
async def test_one_of_many_claims_on_an_expired_lease_wins(log: DeliveryLog) -> None:
    assert (await log.claim(MESSAGE, "crashed", NOW, NOW + LEASE)).won
    await log.record(MESSAGE, "sending", "email", 2, "email: SMTP 451", None, NOW, "crashed")
    later = NOW + LEASE + timedelta(microseconds=1)
    claims = await race(log, later)
    [winner] = winners(claims)
    assert winner != "crashed"
    stored = await log.get(MESSAGE)
    assert stored is not None
    assert (stored.lease_owner, stored.lease_until, stored.attempts) == (winner, later + LEASE, 2)


@on_the_fake_too
async def test_a_live_lease_is_renewed_only_by_its_holder(log: DeliveryLog) -> None:
    assert (await log.claim(MESSAGE, "a", NOW, NOW + LEASE)).won
    just_before = NOW + LEASE - timedelta(microseconds=1)
    lost = await log.claim(MESSAGE, "b", just_before, just_before + LEASE)
    assert not lost.won and lost.record.lease_owner == "a"
    renewed = await log.claim(MESSAGE, "a", just_before, just_before + LEASE)
    assert renewed.won and renewed.record.lease_until == just_before + LEASE
    # Progress is written by the holder only.
    assert not await log.record(MESSAGE, "sending", "email", 1, "x", None, NOW, owner="b")
    assert await log.record(MESSAGE, "sending", "email", 1, "email: SMTP 451", None, NOW, "a")
    stored = await log.get(MESSAGE)
    assert stored is not None and (stored.attempts, stored.lease_owner) == (1, "a")


@on_the_fake_too
async def test_a_released_message_is_queued_and_anyone_takes_it(log: DeliveryLog) -> None:
    assert (await log.claim(MESSAGE, "a", NOW, NOW + LEASE)).won
    await log.release(MESSAGE, "b", NOW)  # not b's to give
    assert not (await log.claim(MESSAGE, "b", NOW, NOW + LEASE)).won
    await log.release(MESSAGE, "a", NOW)
    stored = await log.get(MESSAGE)
    assert stored is not None
    assert (stored.status, stored.lease_owner, stored.lease_until) == ("queued", None, None)
    assert (await log.claim(MESSAGE, "b", NOW, NOW + LEASE)).won


@on_the_fake_too
async def test_the_first_outcome_stands_with_its_one_event(
    log: DeliveryLog, outbox_store: OutboxStore
) -> None:
    assert (await log.claim(MESSAGE, "a", NOW, NOW + LEASE)).won
    sent = events.user_event(events.MESSAGE_SENT, "u", {"message_id": MESSAGE}, NOW)
    # A courier whose lease was taken over may still record what it did: the outcome is a fact.
    assert await log.record(MESSAGE, "sent", "email", 1, None, sent, NOW, owner="b")
    stored = await log.get(MESSAGE)
    assert stored is not None
    assert (stored.status, stored.lease_owner, stored.lease_until) == ("sent", None, None)
    late = events.user_event(events.MESSAGE_ABANDONED, "u", {"message_id": MESSAGE}, NOW)
    assert not await log.record(MESSAGE, "abandoned", "email", 5, "x", late, NOW, owner="a")
    assert not await log.record(MESSAGE, "sending", "email", 5, "x", None, NOW)
    final = await log.claim(MESSAGE, "c", NOW + 2 * LEASE, NOW + 3 * LEASE)
    assert not final.won and final.record.status == "sent"
    assert [m.id for m in await published(outbox_store)] == [sent.id]


@on_the_fake_too
async def test_many_couriers_claiming_many_messages_split_them(log: DeliveryLog) -> None:
    """Each of 10 messages claimed by 4 couriers at once: one winner per message, no error."""
    ids = [f"bbbbbbbb-0000-0000-0000-{i:012d}" for i in range(10)]
    claims = await asyncio.gather(
        *(log.claim(m, f"courier-{c}", NOW, NOW + LEASE) for m in ids for c in range(4))
    )
    won = [
        (m, claim.won) for m, claim in zip([m for m in ids for _ in range(4)], claims, strict=True)
    ]
    for m in ids:
        assert [w for mid, w in won if mid == m].count(True) == 1
