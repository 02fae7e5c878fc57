"""outbox.kafka.KafkaSource over a stand-in for librdkafka's consumer: it hands over what
has arrived as soon as anything has (one blocking poll, then a drain that does not wait), commits
past each acknowledged message without waiting for the broker, and on close commits, and waits
for, exactly what was acknowledged: never a message fetched but not handled."""

from __future__ import annotations

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

    def subscribe(self, topics: list[str]) -> None:
        self.calls.append(("subscribe", topics))

    def poll(self, timeout: float) -> Message | None:
        self.calls.append(("poll", timeout))
        return self.arrived.pop(0) if self.arrived else None

    def consume(self, count: int, timeout: float) -> list[Message]:
        self.calls.append(("consume", (count, timeout)))
        taken, self.arrived = self.arrived[:count], self.arrived[count:]
        return taken

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))

    def close(self) -> None:
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
    assert [m.offset() for m in source._fetch()] == [7]
    # One wait for the first message; the rest is taken without waiting (`consume(n, t)` would
    # wait out `t` for `n` messages).
    assert stand_in.calls == [("poll", POLL_SECONDS), ("consume", (FETCH_BATCH - 1, 0))]


def test_what_has_arrived_comes_in_one_fetch_and_nothing_is_no_batch(source: KafkaSource) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(n) for n in range(5)]
    assert [m.offset() for m in source._fetch()] == [0, 1, 2, 3, 4]
    assert source._fetch() == []
    assert stand_in.calls[-1] == ("poll", POLL_SECONDS)  # nothing came: no drain


async def test_acks_commit_past_each_message_and_close_commits_only_the_acknowledged(
    source: KafkaSource,
) -> None:
    stand_in = consumer(source)
    stand_in.arrived = [Message(10), Message(11), Message(12, partition_=1), Message(13)]
    seen = []
    async for delivery in source.deliveries():
        seen.append(delivery.offset)
        if delivery.offset == 13:
            break  # fetched, never acknowledged: it must be read again
        await delivery.ack()
    assert seen == [10, 11, 12, 13]
    # Each ack commits the next offset to read, without waiting for the broker's answer.
    assert stand_in.commits == [([(0, 11)], True), ([(0, 12)], True), ([(1, 13)], True)]
    await source.close()
    # Closing commits the last acknowledged offset of each partition and waits for it.
    assert stand_in.commits[-1] == ([(0, 12), (1, 13)], False)
    assert stand_in.closed


async def test_closing_with_nothing_acknowledged_commits_nothing(source: KafkaSource) -> None:
    await source.close()
    assert consumer(source).commits == []
    assert consumer(source).closed
