"""Kafka through librdkafka (confluent-kafka): topic creation, the relay's idempotent producer,
and the courier's consumer that commits only after a message is handled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from gatehouse.config import Compression
from gatehouse.errors import Unavailable
from gatehouse.ports import Delivery, Published

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2  # how long one wait for messages lasts (a stop is noticed within it)
FETCH_BATCH = 100


def ensure_topics(
    bootstrap: str, topics: Sequence[str], partitions: int, replication: int, timeout: float = 30
) -> list[str]:
    """Create the topics that are missing; returns the names it created. Blocking: call it in a
    thread or at process start."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing],
        operation_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


class KafkaPublisher:
    """Idempotent producer (`acks=all`, `enable.idempotence`): a retried send is never a second
    copy in the log, and one key's records keep their order. `compression` is the records'
    codec (GATEHOUSE_KAFKA_COMPRESSION): consumers must be able to read it, and gzip is the one
    every client reads with nothing added (kafkajs needs a plug-in for snappy, lz4 and zstd)."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        delivery_timeout_ms: int = 30000,
        compression: Compression = "gzip",
    ):
        self._flush_timeout = delivery_timeout_ms / 1000 + 5
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": compression,
            "delivery.timeout.ms": delivery_timeout_ms,
            # `flush` waits for the whole batch; only failures need a report, not a Python
            # callback per acknowledged record.
            "delivery.report.only.error": True,
        }
        self._producer: Producer | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-producer")

    async def start(self) -> None:
        self._producer = Producer(self._config)

    async def publish(self, records: Sequence[Published]) -> None:
        producer = self._producer
        assert producer is not None, "start() first"
        loop = asyncio.get_running_loop()
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        def produce_all() -> int:
            for r in records:
                while True:
                    try:
                        producer.produce(
                            r.topic,
                            value=r.value,
                            key=r.key.encode(),
                            headers=list(r.headers.items()),
                            on_delivery=on_delivery,
                        )
                        break
                    except BufferError:  # local queue full: let deliveries drain, then go on
                        producer.poll(0.1)
            return int(producer.flush(self._flush_timeout))

        remaining = await loop.run_in_executor(self._pool, produce_all)
        if errors or remaining:
            raise Unavailable(f"Kafka did not acknowledge {len(errors) + remaining} records")

    async def ping(self) -> None:
        """A metadata round trip to a broker. In a thread of its own, not the producer's: a
        publish waiting out an outage must not make readiness time out once Kafka is back, nor
        probes pile up behind it (librdkafka handles are thread-safe)."""
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            await asyncio.to_thread(producer.list_topics, timeout=2.5)
        except KafkaException as exc:
            raise Unavailable("Kafka unavailable") from exc

    async def close(self) -> None:
        if self._producer is not None:
            producer = self._producer
            await asyncio.get_running_loop().run_in_executor(self._pool, producer.flush, 10)
            self._producer = None
        self._pool.shutdown(wait=False)


def _trace_headers(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str] | None:
    """The record's W3C trace context headers, if it has any (the relay's `traceparent`)."""
    found = None
    for name, value in headers or ():
        if name in ("traceparent", "tracestate") and value is not None:
            found = found or {}
            found[name] = value.decode(errors="replace")
    return found


def _committed(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """The broker's answer to an offset commit (served by the consumer's poll)."""
    failed = [p for p in partitions if p.error is not None]
    if err is not None or failed:
        # As in `KafkaSource._commit`: the message will be read again and de-duplicated.
        log.warning("offset not committed, it may be delivered again: %s", err or failed[0].error)


class KafkaSource:
    """A consumer-group member on one topic. Offsets are committed per message after its ack, so
    a crash redelivers what was not finished (consumers de-duplicate on the message id); what
    was acknowledged is committed for sure when the source is closed.

    `session_timeout_ms` is how long the group waits for a member that stopped answering (a
    killed process) before its partitions go to the others: shorter than librdkafka's 45 s, so a
    crashed courier's messages are taken over sooner."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        client_id: str,
        session_timeout_ms: int = 10_000,
    ):
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": client_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(session_timeout_ms // 4, 500),
                "on_commit": _committed,
            }
        )
        self._topic = topic
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._closed = False
        self._acked: dict[tuple[str, int], int] = {}  # next offset to read, per partition
        self._uncommitted: dict[tuple[str, int], int] = {}  # acked since the last fetch

    def _fetch(self, offsets: list[TopicPartition]) -> list[Any]:
        """Commit `offsets`, then what has arrived, as soon as anything has: `consume(n, t)`
        would wait out `t` until `n` messages came (200 ms added to a lone command's delivery);
        `poll` returns with the first message, then `consume(…, 0)` takes whatever else is
        already here."""
        if offsets:
            self._commit(offsets, asynchronous=True)
        first = self._consumer.poll(POLL_SECONDS)
        if first is None:
            return []
        return [first, *self._consumer.consume(FETCH_BATCH - 1, 0)]

    async def deliveries(self) -> AsyncIterator[Delivery]:
        loop = asyncio.get_running_loop()
        consumer = self._consumer
        await loop.run_in_executor(self._pool, consumer.subscribe, [self._topic])
        while not self._closed:
            batch = await loop.run_in_executor(self._pool, self._fetch, self._to_commit())
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("kafka consumer error: %s", error)
                    continue

                async def ack(msg: Any = msg) -> None:
                    self._ack(msg.topic(), msg.partition(), msg.offset() + 1)

                key, partition, offset = msg.key(), msg.partition(), msg.offset()
                yield Delivery(
                    msg.value() or b"",
                    ack,
                    key.decode(errors="replace") if key else None,
                    msg.topic() or "",
                    -1 if partition is None else partition,
                    -1 if offset is None else offset,
                    _trace_headers(msg.headers()),
                )

    def _ack(self, topic: str, partition: int, offset: int) -> None:
        """Note one handled message; its offset is committed with the next fetch, on the
        consumer's own thread. Never here, on the event loop: confluent-kafka 2.16 lets one call
        at a time into a consumer, so a commit beside a running `poll` waited for it, and the
        whole event loop with it (up to `POLL_SECONDS` an ack: a courier sharing its process
        with the webhook dispatcher mailed 12 codes a second). Nor is the broker's answer
        awaited: a commit that fails only means the message is read again, and the delivery
        record de-duplicates it. `close` commits the last ones and waits."""
        self._acked[(topic, partition)] = offset
        self._uncommitted[(topic, partition)] = offset

    def _to_commit(self) -> list[TopicPartition]:
        """The offsets acknowledged since the last fetch, taken on the event loop's thread."""
        if not self._uncommitted:
            return []
        taken, self._uncommitted = self._uncommitted, {}
        return [TopicPartition(t, p, o) for (t, p), o in taken.items()]

    def _commit(self, offsets: list[TopicPartition], *, asynchronous: Literal[True, False]) -> None:
        # (Literal, not bool: confluent_kafka's stubs overload `commit` on each value.)
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            # The partitions moved to another member (a rebalance) or the broker is away: the
            # messages will be read again, and their records de-duplicate them.
            log.warning("offsets not committed, messages may be delivered again: %s", exc)

    async def close(self) -> None:
        self._closed = True

        def finish() -> None:
            if self._acked:
                offsets = [TopicPartition(t, p, o) for (t, p), o in self._acked.items()]
                self._commit(offsets, asynchronous=False)
            self._consumer.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, finish)
        self._pool.shutdown(wait=False)
