"""`ports.EventPublisher` and `ports.DeliverySource` on the in-process bus (`MemoryBus`,
`MemorySource`) and on Kafka (`KafkaPublisher`, `KafkaSource`): what is published is delivered,
each key's records in order, at least once: a delivery not acknowledged goes to the next
consumer, an acknowledged one never does."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from gatehouse.ports import Delivery, Published
from tests.contract.conftest import Bus, take


def records(bus: Bus, count: int, keys: int = 1, topic: str | None = None) -> list[Published]:
    """`count` records over `keys` keys (k0, k1, ...), valued m0, m1, ..."""
    return [
        Published(topic or bus.topic, f"k{i % keys}", b"m%d" % i, {"id": str(i)})
        for i in range(count)
    ]


def where(delivery: Delivery) -> tuple[int, int]:
    return delivery.partition, delivery.offset


async def test_every_record_is_delivered_with_its_key_each_keys_records_in_order(
    bus: Bus,
) -> None:
    await bus.publisher.ping()
    sent = records(bus, 30, keys=3)
    await bus.publisher.publish(sent[:10])
    await bus.publisher.publish([])
    await bus.publisher.publish(sent[10:])
    got = await take(bus.new_source(), 30)
    assert sorted((d.key, d.value) for d in got) == sorted((r.key, r.value) for r in sent)
    assert {d.topic for d in got} == {bus.topic}
    by_key: dict[str | None, list[bytes]] = defaultdict(list)
    for delivery in got:
        by_key[delivery.key].append(delivery.value)
    for key in ("k0", "k1", "k2"):
        assert by_key[key] == [r.value for r in sent if r.key == key]
    # Where each came from (the dead-letter headers name it): distinct, rising per partition.
    assert len({where(d) for d in got}) == 30
    for partition in {d.partition for d in got}:
        offsets = [d.offset for d in got if d.partition == partition]
        assert offsets == sorted(offsets) and offsets[0] >= 0


async def test_a_waiting_consumer_gets_what_is_published_later_and_only_its_topic(
    bus: Bus,
) -> None:
    source = bus.new_source()
    taking = asyncio.ensure_future(take(source, 2))
    await asyncio.sleep(0.2)  # the consumer is waiting (on Kafka: joining its group)
    await bus.publisher.publish(records(bus, 3, topic=bus.other_topic))
    await bus.publisher.publish(records(bus, 2))
    got = await taking
    assert [(d.topic, d.value) for d in got] == [(bus.topic, b"m0"), (bus.topic, b"m1")]


async def test_what_was_not_acknowledged_goes_to_the_next_consumer_and_nothing_else(
    bus: Bus,
) -> None:
    """The courier stops with a message in hand (or dies): the next courier gets that message
    again, where it was, and never one that was acknowledged."""
    await bus.publisher.publish(records(bus, 5))
    first = bus.new_source()
    seen = await take(first, 3, ack=lambda n: n < 2)  # the third in hand, never acknowledged
    await first.close()
    assert [d.value for d in seen] == [b"m0", b"m1", b"m2"]

    again = await take(bus.new_source(), 3)
    assert [d.value for d in again] == [b"m2", b"m3", b"m4"]
    assert where(again[0]) == where(seen[2])
