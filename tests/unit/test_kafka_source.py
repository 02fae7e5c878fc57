"""outbox.kafka.KafkaSource over a stand-in for librdkafka's consumer: it hands over what
has arrived as soon as anything has (one blocking poll, then a drain that does not wait), commits
past the acknowledged messages with the next fetch, on the consumer's own thread and without
waiting for the broker (confluent-kafka lets one call at a time into a consumer: a commit from the
event loop beside a running poll blocked the loop), and on close commits, and waits for, exactly
what was acknowledged: never a message fetched but not handled."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from gatehouse.outbox import kafka as kafka_events
from gatehouse.outbox.kafka import FETCH_BATCH, POLL_SECONDS, KafkaSource

TOPIC = "send-otp"


@dataclass
class Message:
    offset_: int
    partition_: int = 0

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return b"user-1"

    def value(self) -> bytes:
        return b'{"n": %d}' % self.offset_

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None


@dataclass
class StandInConsumer:
    """Records every call; `arrived` is what the broker has sent so far."""

    config: dict[str, Any]
    arrived: list[Message] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    commits: list[tuple[list[tuple[int, int]], bool]] = field(default_factory=list)
    closed: bool = False
    threads: set[int] = field(default_factory=set)  # the threads that called in

    def subscribe(self, topics: list[str]) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("subscribe", topics))

    def poll(self, timeout: float) -> Message | None:
        self.threads.add(threading.get_ident())
        self.calls.append(("poll", timeout))
        return self.arrived.pop(0) if self.arrived else None

    def consume(self, count: int, timeout: float) -> list[Message]:
        self.calls.append(("consume", (count, timeout)))
        taken, self.arrived = self.arrived[:count], self.arrived[count:]
        return taken

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("commit", asynchronous))
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.closed = True


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> KafkaSource:
    monkeypatch.setattr(kafka_events, "Consumer", StandInConsumer)
    return KafkaSource("127.0.0.1:9", "group", TOPIC, "test")


def consumer(source: KafkaSource) -> StandInConsumer:
    stand_in = source._consumer
    assert isinstance(stand_in, StandInConsumer)
    return stand_in


def test_offsets_are_committed_only_by_hand(source: KafkaSource) -> None:
    config = consumer(source).config
    assert config["enable.auto.commit"] is False
    assert callable(config["on_commit"])


def test_a_lone_message_is_handed_over_without_waiting_for_a_batch(source: KafkaSource) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(7)]
    assert [m.offset() for m in source._fetch([])] == [7]
    # One wait for the first message; the rest is taken without waiting (`consume(n, t)` would
    # wait out `t` for `n` messages).
    assert stand_in.calls == [("poll", POLL_SECONDS), ("consume", (FETCH_BATCH - 1, 0))]


def test_what_has_arrived_comes_in_one_fetch_and_nothing_is_no_batch(source: KafkaSource) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(n) for n in range(5)]
    assert [m.offset() for m in source._fetch([])] == [0, 1, 2, 3, 4]
    assert source._fetch([]) == []
    assert stand_in.calls[-1] == ("poll", POLL_SECONDS)  # nothing came: no drain


async def test_acks_are_committed_with_the_next_fetch_and_close_commits_only_the_acknowledged(
    source: KafkaSource,
) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(10), Message(11), Message(12, partition_=1)]
    seen = []
    async for delivery in source.deliveries():
        seen.append(delivery.offset)
        if delivery.offset == 12:
            # An ack commits nothing by itself: the offsets go with the next fetch.
            assert stand_in.commits == []
            stand_in.arrived.append(Message(13))  # so that the next fetch finds something
        if delivery.offset == 13:
            break  # fetched, never acknowledged: it must be read again
        await delivery.ack()
    assert seen == [10, 11, 12, 13]
    # The first fetch took 10-12 (13 arrived after); the second committed the next offset to
    # read on each partition, without waiting for the broker's answer, then polled.
    assert stand_in.commits[0] == ([(0, 12), (1, 13)], True)
    first_commit = stand_in.calls.index(("commit", True))
    assert stand_in.calls[first_commit + 1] == ("poll", POLL_SECONDS)
    await source.close()
    # Closing commits the last acknowledged offset of each partition and waits for it.
    assert stand_in.commits[-1] == ([(0, 12), (1, 13)], False)
    assert stand_in.closed


async def test_the_consumer_is_called_from_one_thread_never_the_event_loop(
    source: KafkaSource,
) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(n) for n in range(5)]
    async for delivery in source.deliveries():
        await delivery.ack()
        if delivery.offset == 4:
            break
    await source.close()
    assert stand_in.commits, "nothing committed"
    assert len(stand_in.threads) == 1
    assert threading.get_ident() not in stand_in.threads


async def test_closing_with_nothing_acknowledged_commits_nothing(source: KafkaSource) -> None:
    await source.close()
    assert consumer(source).commits == []
    assert consumer(source).closed
