"""The courier against a failing mail server, from a real Kafka topic, with its record on
PostgreSQL: SMTP answering 451 or timing out is retried and the mail sent once; a permanent 550,
or a server still refusing after the last try, is abandoned with its event; an expired code is
never sent, also when it expires during a retry; what cannot be processed (garbage, a database
down past the retry budget) goes to the dead-letter topic with its origin in the headers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.courier.channels.smtp import SmtpChannel
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring, generate_secrets_document, parse_secrets
from gatehouse.domain.events import OutboxMessage
from gatehouse.outbox.kafka import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.outbox.relay import to_published
from gatehouse.ports import OutboxRecord, Published
from gatehouse.storage import sql
from gatehouse.storage.schema import deliveries, outbox
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from tests.conftest import committed_offset as committed
from tests.conftest import free_port, quiet_mail_log, read_topic, smtp_server, unique
from tests.integration.conftest import create_database, drop_database

CODE = "480316"


@dataclass
class ScriptedSmtp:
    """An aiosmtpd server answering each recipient's tries from a script: `451` (at the end of
    DATA: try later), `550` (at RCPT: no such mailbox), `hang` (no answer to DATA: the client
    times out), `ok`; the last answer repeats. `then` runs when a try gets its answer."""

    host: str
    port: int
    scripts: dict[str, list[str]] = field(default_factory=dict)
    tries: Counter[str] = field(default_factory=Counter)
    accepted: list[Message] = field(default_factory=list)
    then: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _answer(self, address: str) -> str:
        with self.lock:
            self.tries[address] += 1
            script = self.scripts.get(address, ["ok"])
            answer = script.pop(0) if len(script) > 1 else script[0]
        if address in self.then:
            self.then.pop(address)()
        return answer

    async def handle_RCPT(
        self, _server: Any, session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        answer = self._answer(address)
        if answer == "550":
            return "550 5.1.1 No such mailbox"
        session.scripted = answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        answer = getattr(session, "scripted", "ok")
        if answer == "hang":
            await asyncio.sleep(60)  # cancelled when the server stops
        if answer == "451":
            return "451 4.3.0 Try again later"
        with self.lock:
            self.accepted.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def received(self, address: str) -> int:
        return sum(m["To"] == address for m in list(self.accepted))


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtp]:
    # The server stops (joining its thread) before the mail log is loud again.
    with quiet_mail_log(), smtp_server(ScriptedSmtp("127.0.0.1", free_port())) as server:
        yield server


@pytest.fixture
async def engine(postgres_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url, admin = await asyncio.to_thread(create_database, "postgres", tmp_path)
    engine = sql.create_engine(url)
    yield engine
    await engine.dispose()
    await asyncio.to_thread(drop_database, url, admin)


@pytest.fixture
def keyring() -> Keyring:
    return parse_secrets(generate_secrets_document()).keyring()


def utcnow() -> datetime:
    return datetime.now(UTC)


def command(keyring: Keyring, to: str, expires_in: timedelta = timedelta(minutes=10)) -> Published:
    message_id = events.new_id()
    now = utcnow()
    message = events.delivery(
        message_id=message_id,
        key=f"user-{to}",
        channel="email",
        to=to,
        template="verify-email",
        now=now,
        expires_at=now + expires_in,
        code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        variables={"name": "Ada", "minutes": "10"},
    )
    return to_published(
        OutboxRecord(1, OutboxMessage(message.id, "", message.key, message.payload, now))
    )


async def publish(bootstrap: str, topic: str, records: list[Published]) -> None:
    publisher = KafkaPublisher(bootstrap, "gatehouse-test")
    await publisher.start()
    await publisher.publish([Published(topic, r.key, r.value, r.headers) for r in records])
    await publisher.close()


async def run_until(courier: Courier, handled: int, timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(courier.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(courier.outcomes.values()) < handled:
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, courier.outcomes
        await asyncio.sleep(0.05)
    stop.set()
    await task


async def test_smtp_errors_and_timeouts_are_retried_and_sent_once_or_abandoned(
    kafka_bootstrap: str, smtp: ScriptedSmtp, engine: AsyncEngine, keyring: Keyring
) -> None:
    topic, group = unique("gh-send-otp"), unique("gh-courier")
    dlq = f"{topic}.dlq"
    ensure_topics(kafka_bootstrap, [topic, dlq], 1, 1)
    smtp.scripts = {
        "retry@example.com": ["451", "451", "ok"],
        "hang@example.com": ["hang", "ok"],
        "reject@example.com": ["550"],
        "busy@example.com": ["451"],
        "expiring@example.com": ["451", "ok"],
    }
    # The clock the courier reads jumps past every code's lifetime when the last command's first
    # try is refused: its retry, 50 ms later, finds the code expired.
    skew = timedelta()

    def expire() -> None:
        nonlocal skew
        skew = timedelta(minutes=11)

    smtp.then["expiring@example.com"] = expire
    records = [
        command(keyring, "retry@example.com"),
        command(keyring, "hang@example.com"),
        command(keyring, "reject@example.com"),
        command(keyring, "busy@example.com"),
        command(keyring, "late@example.com", expires_in=timedelta(seconds=-1)),
        Published(topic, "k", b"\x00not a command", {}),
        command(keyring, "expiring@example.com"),
    ]
    await publish(kafka_bootstrap, topic, records)
    courier = Courier(
        KafkaSource(kafka_bootstrap, group, topic, "gatehouse-test"),
        keyring=keyring,
        renderer=Templates(),
        channels={"email": SmtpChannel(smtp.url, "Gatehouse <gh@example.com>", timeout=2.0)},
        clock=lambda: utcnow() + skew,
        deliveries=SqlDeliveryLog(engine),
        attempts=4,
        first_backoff=0.05,
        dead_letters=KafkaPublisher(kafka_bootstrap, "gatehouse-test-courier"),
        dead_letter_topic=dlq,
    )
    await run_until(courier, len(records))

    received = {to: smtp.received(to) for to in smtp.scripts | {"late@example.com": []}}
    print(f"\nSMTP tries {dict(smtp.tries)}; received {received}; outcomes {courier.outcomes}")
    assert courier.outcomes == {"sent": 2, "abandoned": 4, "dead-lettered": 1}
    assert received == {
        "retry@example.com": 1,
        "hang@example.com": 1,
        "reject@example.com": 0,
        "busy@example.com": 0,
        "late@example.com": 0,
        "expiring@example.com": 0,
    }
    assert smtp.tries == Counter(
        {
            "retry@example.com": 3,
            "hang@example.com": 2,
            "reject@example.com": 1,  # permanent: not tried again
            "busy@example.com": 4,  # the configured attempts, then given up
            "expiring@example.com": 1,
        }
    )
    [mail] = [m for m in smtp.accepted if m["To"] == "retry@example.com"]
    assert CODE in str(mail.get_payload(decode=True))

    ids = {json.loads(r.value)["to"]: json.loads(r.value)["id"] for r in records if r.key != "k"}
    async with engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(select(deliveries))}
        outcome_events = [json.loads(r.payload) for r in await conn.execute(select(outbox))]
    expected = {
        "retry@example.com": ("sent", 3, "email: SMTP 451"),
        "hang@example.com": ("sent", 2, "email: SMTP unreachable: SMTPReadTimeoutError"),
        "reject@example.com": ("abandoned", 1, "email: SMTP 550"),
        "busy@example.com": ("abandoned", 4, "email: SMTP 451"),
        "late@example.com": ("abandoned", 0, "expired before it could be sent"),
        "expiring@example.com": ("abandoned", 1, "expired before it could be sent"),
    }
    assert {
        to: (rows[i].status, rows[i].attempts, rows[i].last_error) for to, i in ids.items()
    } == (expected)
    assert all(rows[i].lease_owner is None for i in ids.values())
    # One event per message, the outcome's; an abandonment says why.
    by_message = Counter(e["data"]["message_id"] for e in outcome_events)
    assert by_message == Counter(set(ids.values()))
    for to, message_id in ids.items():
        [event] = [e for e in outcome_events if e["data"]["message_id"] == message_id]
        sent = expected[to][0] == "sent"
        assert event["type"] == (events.MESSAGE_SENT if sent else events.MESSAGE_ABANDONED)
        assert sent or event["data"]["reason"] == expected[to][2]
        assert CODE not in json.dumps(event)

    [letter] = await asyncio.to_thread(read_topic, kafka_bootstrap, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert letter.value() == b"\x00not a command"
    assert headers["dlq-original-topic"] == topic
    assert (headers["dlq-original-partition"], headers["dlq-original-offset"]) == ("0", "5")
    assert headers["dlq-error-class"] == "Unreadable"
    assert await asyncio.to_thread(committed, kafka_bootstrap, group, topic) == len(records)


async def test_a_database_down_past_the_budget_dead_letters_the_command(
    kafka_bootstrap: str, smtp: ScriptedSmtp, keyring: Keyring
) -> None:
    topic, group = unique("gh-send-otp"), unique("gh-courier")
    dlq = f"{topic}.dlq"
    ensure_topics(kafka_bootstrap, [topic, dlq], 1, 1)
    record = command(keyring, "ada@example.com")
    await publish(kafka_bootstrap, topic, [record])
    down = sql.create_engine(
        f"postgresql+asyncpg://gatehouse:gatehouse@127.0.0.1:{free_port()}/gatehouse"
    )
    courier = Courier(
        KafkaSource(kafka_bootstrap, group, topic, "gatehouse-test"),
        keyring=keyring,
        renderer=Templates(),
        channels={"email": SmtpChannel(smtp.url, "Gatehouse <gh@example.com>", timeout=2.0)},
        clock=utcnow,
        deliveries=SqlDeliveryLog(down),
        first_backoff=0.05,
        retry_budget=0.5,
        dead_letters=KafkaPublisher(kafka_bootstrap, "gatehouse-test-courier"),
        dead_letter_topic=dlq,
    )
    try:
        await run_until(courier, 1)
    finally:
        await down.dispose()
    assert courier.outcomes == {"sent": 0, "abandoned": 0, "dead-lettered": 1}
    assert smtp.tries == Counter()  # nothing is sent without its lease
    [letter] = await asyncio.to_thread(read_topic, kafka_bootstrap, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert letter.value() == record.value and letter.key() == record.key.encode()
    assert headers["dlq-error-class"] == "Unavailable"
    assert headers["dlq-error"] == "Database unavailable"
    assert (headers["dlq-original-topic"], headers["dlq-original-offset"]) == (topic, "0")
    assert CODE not in letter.value().decode()  # the code stays sealed
    assert await asyncio.to_thread(committed, kafka_bootstrap, group, topic) == 1
