"""The relay publishing the outbox to a real Kafka broker, and the courier consuming it and
sending mail to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from gatehouse.courier.channels.smtp import SmtpChannel
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import generate_secrets_document, parse_secrets
from gatehouse.domain.events import OutboxMessage
from gatehouse.outbox.kafka import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.outbox.relay import Relay
from gatehouse.storage.sql_outbox import SqlOutboxStore
from tests.conftest import MailSink, body_of, read_topic, unique
from tests.fakes import MemoryDeliveryLog
from tests.integration.conftest import outbox_of_logins


def utcnow() -> datetime:
    return datetime.now(UTC)


def test_topics_are_created_once(kafka_bootstrap: str) -> None:
    names = [unique("gh-a"), unique("gh-b")]
    assert sorted(ensure_topics(kafka_bootstrap, names, 3, 1)) == sorted(names)
    assert ensure_topics(kafka_bootstrap, names, 3, 1) == []


async def test_relay_publishes_outbox_rows_in_order_with_keys_and_headers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("gh-events")
    ensure_topics(kafka_bootstrap, [topic], 3, 1)
    engine, written = await outbox_of_logins(tmp_path / "relay.db", topic, 30)
    publisher = KafkaPublisher(kafka_bootstrap, "gatehouse-test")
    relay = Relay(SqlOutboxStore(engine, utcnow), publisher, batch=8, interval=0.01, clock=utcnow)
    await publisher.start()
    while await relay.run_once():
        pass
    await publisher.close()
    assert relay.published == 30
    assert await SqlOutboxStore(engine, utcnow).pending_count() == 0
    await engine.dispose()

    received = await asyncio.to_thread(read_topic, kafka_bootstrap, topic, 30)
    assert len(received) == 30
    by_id = {m.id: m for m in written}
    for msg in received:
        payload = json.loads(msg.value())
        headers = dict(msg.headers())
        original = by_id[headers["id"].decode()]
        assert payload == original.payload
        assert msg.key().decode() == original.key == payload["subject"]
        assert headers["content-type"] == b"application/cloudevents+json"
    for user in ("user-0", "user-1", "user-2"):  # one user's events stay in order
        mine = [json.loads(m.value())["data"]["n"] for m in received if m.key() == user.encode()]
        assert mine == sorted(mine) and len(mine) == 10


async def test_courier_delivers_kafka_commands_by_smtp_and_commits(
    kafka_bootstrap: str, mail_sink: MailSink
) -> None:
    topic, group = unique("gh-send-otp"), unique("gh-courier")
    ensure_topics(kafka_bootstrap, [topic], 1, 1)
    keyring = parse_secrets(generate_secrets_document()).keyring()
    now = utcnow()
    commands = []
    for i, code in enumerate(["123456", "654321"]):
        message_id = events.new_id()
        commands.append(
            events.delivery(
                message_id=message_id,
                key=f"k{i}",
                channel="email",
                to=f"person{i}@example.com",
                template="verify-email",
                now=now,
                expires_at=now + timedelta(minutes=10),
                code_ciphertext=keyring.encrypt(code, events.code_context(message_id)),
                variables={"name": f"Person {i}", "minutes": "10"},
            )
        )
    expired = events.delivery(
        key="k2",
        channel="email",
        to="late@example.com",
        template="account-exists",
        now=now,
        expires_at=now - timedelta(seconds=1),
    )
    publisher = KafkaPublisher(kafka_bootstrap, "gatehouse-test")
    await publisher.start()
    from gatehouse.outbox.relay import to_published
    from gatehouse.ports import OutboxRecord

    await publisher.publish(
        [
            to_published(OutboxRecord(i, OutboxMessage(c.id, topic, c.key, c.payload, now)))
            for i, c in enumerate([*commands, expired])
        ]
    )
    await publisher.close()

    source = KafkaSource(kafka_bootstrap, group, topic, "gatehouse-test")
    courier = Courier(
        source,
        keyring=keyring,
        renderer=Templates(),
        channels={"email": SmtpChannel(mail_sink.url, "Gatehouse <gh@example.com>")},
        clock=utcnow,
        deliveries=MemoryDeliveryLog(),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(courier.run(stop))
    first = await mail_sink.wait_for("person0@example.com")
    second = await mail_sink.wait_for("person1@example.com")
    deadline = asyncio.get_running_loop().time() + 20
    while sum(courier.outcomes.values()) < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await task

    # The sign-up's name stays out of mail to an address not yet proven.
    assert "123456" in body_of(first[0]) and "Person 0" not in body_of(first[0])
    assert "654321" in body_of(second[0])
    assert first[0]["X-Gatehouse-Message-Id"] == commands[0].id
    assert mail_sink.to("late@example.com") == []  # expired: never sent
    assert courier.outcomes == {"sent": 2, "abandoned": 1}

    checker = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committed = checker.committed([TopicPartition(topic, 0)], timeout=10)
    checker.close()
    assert committed[0].offset == 3  # every message acknowledged after it was handled
