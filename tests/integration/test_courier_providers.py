"""The real Twilio and SendGrid SDKs against a local HTTP server standing in for both providers:
the exact requests they make, how each answer is classified, fallback, retries, expiry, and the
courier end to end from a real Kafka topic with its recorded outcome and event."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from gatehouse.courier.channels.sendgrid import SendGridChannel
from gatehouse.courier.channels.twilio_sms import TwilioSmsChannel
from gatehouse.courier.channels.twilio_whatsapp import TwilioWhatsAppChannel
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring, generate_secrets_document, parse_secrets
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.users import mask_phone
from gatehouse.errors import ChannelError
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.kafka import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.outbox.relay import to_published
from gatehouse.ports import Channel, OutboxRecord, OutgoingMessage
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.schema import deliveries, outbox
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from tests.conftest import committed_offset, free_port, unique
from tests.fakes import MemoryDeliveryLog

SID, TOKEN = "AC" + "0123456789abcdef" * 2, "twilio-auth-token"
SMS_FROM, WHATSAPP_FROM = "+15005550006", "+14155238886"
PHONE = "+14155550123"
API_KEY = "SG.test-key"
MESSAGES_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
CODE = "318604"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), strict_parsing=True).items()}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    hang: bool = False  # answer only once the test is over: the client must time out first


@dataclass
class FakeProviders:
    """Twilio and SendGrid on loopback. `script(path_part, *answers)` queues answers for the
    requests whose path contains `path_part` (the last one repeats); every request is kept."""

    url: str
    requests: list[Seen] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path_part: str, *answers: Answer) -> None:
        self.scripts[path_part] = list(answers)

    def next_answer(self, path: str) -> Answer:
        with self.lock:
            for part, answers in self.scripts.items():
                if part in path:
                    return answers.pop(0) if len(answers) > 1 else answers[0]
        if path.endswith("/Messages.json"):
            return Answer(201, {"sid": "SM" + "f" * 32, "status": "queued"})
        return Answer(202)

    def to(self, path_part: str) -> list[Seen]:
        return [r for r in self.requests if path_part in r.path]


@pytest.fixture
def providers() -> Iterator[FakeProviders]:
    port = free_port()
    fake = FakeProviders(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                fake.requests.append(Seen("POST", self.path, dict(self.headers.items()), body))
            answer = fake.next_answer(self.path)
            if answer.hang:
                fake.released.wait(10)
            payload = json.dumps(answer.body or {}).encode() if answer.body is not None else b""
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if self.path == "/v3/mail/send" and answer.status == 202:
                    self.send_header("X-Message-Id", "sg-message-1")
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                pass

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()


def sms(providers: FakeProviders, timeout: float = 5.0, **kwargs: Any) -> TwilioSmsChannel:
    options: dict[str, Any] = {"from_number": SMS_FROM} | kwargs
    return TwilioSmsChannel(SID, TOKEN, base_url=providers.url, timeout=timeout, **options)


def whatsapp(providers: FakeProviders, **kwargs: Any) -> TwilioWhatsAppChannel:
    options: dict[str, Any] = {"from_number": WHATSAPP_FROM} | kwargs
    return TwilioWhatsAppChannel(SID, TOKEN, base_url=providers.url, timeout=5.0, **options)


def sendgrid(providers: FakeProviders, timeout: float = 5.0) -> SendGridChannel:
    return SendGridChannel(
        API_KEY, "Gatehouse <no-reply@example.com>", base_url=providers.url, timeout=timeout
    )


def outgoing(channel: str, to: str = PHONE) -> OutgoingMessage:
    return OutgoingMessage("msg-1", channel, to, "", f"Gatehouse: your code is {CODE}.")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the exact requests ---------------------------------------------------------------------


async def test_twilio_sms_posts_the_message_form_with_basic_auth(
    providers: FakeProviders,
) -> None:
    await sms(providers).send(outgoing("sms"))
    [seen] = providers.requests
    assert (seen.method, seen.path) == ("POST", MESSAGES_PATH)
    assert seen.headers["Authorization"] == basic(SID, TOKEN)
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.form() == {
        "To": PHONE,
        "From": SMS_FROM,
        "Body": f"Gatehouse: your code is {CODE}.",
    }


async def test_twilio_whatsapp_prefixes_both_addresses(providers: FakeProviders) -> None:
    await whatsapp(providers).send(outgoing("whatsapp"))
    [seen] = providers.requests
    assert seen.path == MESSAGES_PATH
    assert seen.form()["To"] == f"whatsapp:{PHONE}"
    assert seen.form()["From"] == f"whatsapp:{WHATSAPP_FROM}"
    # an already prefixed sender is not prefixed twice
    await whatsapp(providers, from_number=f"whatsapp:{WHATSAPP_FROM}").send(outgoing("whatsapp"))
    assert providers.requests[1].form()["From"] == f"whatsapp:{WHATSAPP_FROM}"


async def test_twilio_messaging_service_instead_of_a_from_number(
    providers: FakeProviders,
) -> None:
    service = "MG" + "a" * 32
    await sms(providers, from_number="", messaging_service_sid=service).send(outgoing("sms"))
    form = providers.requests[0].form()
    assert form["MessagingServiceSid"] == service
    assert "From" not in form
    with pytest.raises(ValueError, match="from number or a Messaging Service"):
        TwilioSmsChannel(SID, TOKEN, base_url=providers.url)


async def test_sendgrid_posts_mail_send_json_with_bearer_key(providers: FakeProviders) -> None:
    message = OutgoingMessage("msg-7", "email", "ada@example.com", "Your code", f"Code {CODE}")
    await sendgrid(providers).send(message)
    [seen] = providers.requests
    assert (seen.method, seen.path) == ("POST", "/v3/mail/send")
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {
        "from": {"name": "Gatehouse", "email": "no-reply@example.com"},
        "subject": "Your code",
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "content": [{"type": "text/plain", "value": f"Code {CODE}"}],
        "custom_args": {"gatehouse_message_id": "msg-7"},
    }


# --- classification of answers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (408, False), (429, False), (500, False), (503, False)],
)
@pytest.mark.parametrize("provider", ["twilio", "sendgrid"])
async def test_http_answers_are_classified(
    providers: FakeProviders, provider: str, status: int, permanent: bool
) -> None:
    error = {"code": 21211, "message": f"The 'To' number {PHONE} is not valid", "status": status}
    providers.script("/", Answer(status, error))
    channel: Channel = sms(providers) if provider == "twilio" else sendgrid(providers)
    message = outgoing("sms") if provider == "twilio" else outgoing("email", "ada@example.com")
    with pytest.raises(ChannelError) as caught:
        await channel.send(message)
    assert caught.value.permanent is permanent
    assert str(status) in str(caught.value)
    assert PHONE not in str(caught.value) and CODE not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("provider", ["twilio", "sendgrid"])
async def test_a_provider_that_hangs_or_is_down_is_transient(
    providers: FakeProviders, provider: str
) -> None:
    providers.script("/", Answer(201, hang=True))
    channel: Channel = (
        sms(providers, timeout=0.3) if provider == "twilio" else sendgrid(providers, timeout=0.3)
    )
    to = PHONE if provider == "twilio" else "ada@example.com"
    with pytest.raises(ChannelError) as hung:
        await channel.send(outgoing(channel.name, to))
    assert hung.value.permanent is False and "unreachable" in str(hung.value)

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    closed: Channel = (
        TwilioSmsChannel(SID, TOKEN, from_number=SMS_FROM, base_url=down, timeout=2)
        if provider == "twilio"
        else SendGridChannel(API_KEY, "gh@example.com", base_url=down, timeout=2)
    )
    with pytest.raises(ChannelError) as refused:
        await closed.send(outgoing(closed.name, to))
    assert refused.value.permanent is False


# --- the courier's policy through the real SDKs ---------------------------------------------


@pytest.fixture
def keyring() -> Keyring:
    return parse_secrets(generate_secrets_document()).keyring()


def phone_command(
    keyring: Keyring,
    *,
    channel: str = "whatsapp",
    fallbacks: tuple[str, ...] = ("sms",),
    expires_in: timedelta = timedelta(minutes=10),
    key: str = "user-42",
) -> OutboxMessage:
    """A code for PHONE on `channel`, then `fallbacks`, as the flows write it."""
    message_id = events.new_id()
    now = utcnow()

    def sealed() -> str:
        return keyring.encrypt(PHONE, events.recipient_context(message_id))

    return events.delivery(
        message_id=message_id,
        key=key,
        channel=channel,
        to=mask_phone(PHONE),
        to_ciphertext=sealed(),
        template="verify",
        now=now,
        expires_at=now + expires_in,
        code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        variables={"minutes": "10"},
        fallbacks=[
            {"channel": c, "to": mask_phone(PHONE), "to_ciphertext": sealed()} for c in fallbacks
        ],
    )


def value(message: OutboxMessage) -> bytes:
    return json.dumps(message.payload).encode()


def memory_courier(
    keyring: Keyring, channels: Mapping[str, Channel], log: MemoryDeliveryLog, **options: Any
) -> Courier:
    """A courier taking commands from memory (`deliver`), three attempts a command."""
    return Courier(
        MemoryBus().source(events.SEND_OTP),
        keyring=keyring,
        renderer=Templates(),
        channels=channels,
        clock=utcnow,
        deliveries=log,
        attempts=3,
        **options,
    )


async def test_whatsapp_400_falls_back_to_sms(providers: FakeProviders, keyring: Keyring) -> None:
    providers.script("Messages.json", Answer(400, {"code": 63016}), Answer(201, {"sid": "SM1"}))
    log = MemoryDeliveryLog()
    command = phone_command(keyring)
    courier = memory_courier(
        keyring, {"whatsapp": whatsapp(providers), "sms": sms(providers)}, log, first_backoff=0.001
    )
    outcome = await courier.deliver(value(command), "user-42")
    assert outcome == "sent"
    first, second = providers.requests
    assert first.form()["To"] == f"whatsapp:{PHONE}"
    assert second.form() == {
        "To": PHONE,
        "From": SMS_FROM,
        "Body": f"Gatehouse: your code is {CODE}. It expires in 10 minutes.",
    }
    record = log.records[command.id]
    assert (record.status, record.channel, record.attempts) == ("sent", "sms", 2)
    assert record.last_error == "whatsapp: Twilio 400 error 63016"
    [event] = [m for _s, m, _p in log.db.tables.outbox]
    assert event.payload["type"] == events.MESSAGE_SENT and event.key == "user-42"


@pytest.mark.parametrize(
    ("answer", "timeout"),
    [(Answer(500), 5.0), (Answer(429, {"code": 20429}), 5.0), (Answer(201, hang=True), 0.3)],
    ids=["500", "429", "hang"],
)
async def test_transient_answers_are_retried_then_abandoned(
    providers: FakeProviders, keyring: Keyring, answer: Answer, timeout: float
) -> None:
    providers.script("Messages.json", answer)
    log = MemoryDeliveryLog()
    command = phone_command(keyring, channel="sms", fallbacks=())
    courier = memory_courier(
        keyring, {"sms": sms(providers, timeout=timeout)}, log, first_backoff=0.01
    )
    outcome = await courier.deliver(value(command), "user-42")
    assert outcome == "abandoned"
    assert len(providers.to("Messages.json")) == 3  # every attempt reached the provider
    record = log.records[command.id]
    assert (record.status, record.channel, record.attempts) == ("abandoned", "sms", 3)
    [event] = [m for _s, m, _p in log.db.tables.outbox]
    assert event.payload["type"] == events.MESSAGE_ABANDONED
    assert event.payload["data"]["reason"] == record.last_error
    assert PHONE not in json.dumps(event.payload) and CODE not in json.dumps(event.payload)


async def test_sendgrid_500_then_202_is_sent_on_the_second_attempt(
    providers: FakeProviders, keyring: Keyring
) -> None:
    providers.script("/v3/mail/send", Answer(500), Answer(202))
    message_id = events.new_id()
    now = utcnow()
    command = events.delivery(
        message_id=message_id,
        key="user-1",
        channel="email",
        to="ada@example.com",
        template="verify-email",
        now=now,
        expires_at=now + timedelta(minutes=10),
        code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        variables={"name": "Ada", "minutes": "10"},
    )
    courier = memory_courier(
        keyring, {"email": sendgrid(providers)}, MemoryDeliveryLog(), first_backoff=0.001
    )
    outcome = await courier.deliver(value(command))
    assert outcome == "sent"
    assert len(providers.requests) == 2
    mail = providers.requests[1].json()
    assert mail["subject"] == "Your Gatehouse verification code"
    # The name a sign-up chose never reaches mail to an address not yet proven.
    assert CODE in mail["content"][0]["value"] and "Ada" not in mail["content"][0]["value"]


async def test_an_expired_command_is_never_sent(providers: FakeProviders, keyring: Keyring) -> None:
    log = MemoryDeliveryLog()
    command = phone_command(keyring, expires_in=timedelta(seconds=-1))
    courier = memory_courier(keyring, {"whatsapp": whatsapp(providers), "sms": sms(providers)}, log)
    outcome = await courier.deliver(value(command))
    assert outcome == "abandoned"
    assert providers.requests == []
    assert log.records[command.id].attempts == 0
    assert log.records[command.id].last_error == "expired before it could be sent"


# --- end to end: Kafka -> courier -> fake Twilio, outcome recorded with its event -------------


async def test_courier_from_kafka_sends_the_sms_once_and_records_it(
    kafka_bootstrap: str, providers: FakeProviders, keyring: Keyring, tmp_path: Path
) -> None:
    topic, group = unique("gh-send-otp"), unique("gh-courier")
    ensure_topics(kafka_bootstrap, [topic], 1, 1)
    engine = sql.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'courier.db'}")
    await upgrade(engine)
    command = phone_command(keyring, channel="sms", fallbacks=())
    publisher = KafkaPublisher(kafka_bootstrap, "gatehouse-test")
    await publisher.start()
    record = OutboxRecord(
        1, OutboxMessage(command.id, topic, command.key, command.payload, utcnow())
    )
    await publisher.publish([to_published(record), to_published(record)])  # delivered twice
    await publisher.close()

    courier = Courier(
        KafkaSource(kafka_bootstrap, group, topic, "gatehouse-test"),
        keyring=keyring,
        renderer=Templates(),
        channels={"sms": sms(providers)},
        clock=utcnow,
        deliveries=SqlDeliveryLog(engine),
        attempts=3,
        first_backoff=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(courier.run(stop))
    deadline = asyncio.get_running_loop().time() + 30
    while sum(courier.outcomes.values()) < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await task

    assert courier.outcomes == {"sent": 1, "abandoned": 0, "duplicate": 1}
    [seen] = providers.requests  # the same command twice, one SMS
    assert seen.path == MESSAGES_PATH
    assert seen.form()["To"] == PHONE and CODE in seen.form()["Body"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(deliveries))).all()
        events_rows = (await conn.execute(select(outbox))).all()
    await engine.dispose()
    assert [(r.id, r.status, r.channel, r.attempts) for r in rows] == [
        (command.id, "sent", "sms", 1)
    ]
    [event] = events_rows
    assert (event.topic, event.message_key) == (events.USER_EVENTS, "user-42")
    payload = json.loads(event.payload)
    assert payload["type"] == events.MESSAGE_SENT
    assert payload["data"] == {
        "user_id": "user-42",
        "message_id": command.id,
        "channel": "sms",
        "template": "verify",
    }
    assert await asyncio.to_thread(committed_offset, kafka_bootstrap, group, topic) == 2
