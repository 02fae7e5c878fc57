"""The courier's policy over channels (courier.delivery and courier.record, driven by one pass of
`Courier.deliver`, on the memory delivery log): fallback on
permanent failures, retries with backoff, expiry before every try, de-duplication on the message
id, recorded outcomes and their events; plus channel choice, short texts and error classes."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from gatehouse import bootstrap
from gatehouse.config import Settings
from gatehouse.courier import consumer as courier_module
from gatehouse.courier.channels.console import ConsoleChannel
from gatehouse.courier.channels.http_status import is_permanent
from gatehouse.courier.channels.sendgrid import SendGridChannel
from gatehouse.courier.channels.smtp import SmtpChannel
from gatehouse.courier.channels.twilio_sms import TwilioSmsChannel
from gatehouse.courier.channels.twilio_whatsapp import TwilioWhatsAppChannel
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.users import mask_phone
from gatehouse.errors import ChannelError, Unavailable, Unreadable
from gatehouse.outbox.bus import MemoryBus
from gatehouse.ports import (
    Claim,
    Delivery,
    DeliveryRecord,
    OutgoingMessage,
    Published,
)
from tests.fakes import MemoryDeliveryLog

from .helpers import FakeClock

PHONE = "+14155550123"
EMAIL = "ada@example.com"
CODE = "570213"
KEY = "user-42"
TRANSIENT = ChannelError("Twilio 503", permanent=False)
PERMANENT = ChannelError("Twilio 400 error 21211", permanent=True)


@dataclass
class ScriptedChannel:
    """Fails with `failures` in order (`None` succeeds), then succeeds; records every try."""

    name: str
    failures: list[ChannelError | None] = field(default_factory=list)
    tries: list[OutgoingMessage] = field(default_factory=list)
    sent: list[OutgoingMessage] = field(default_factory=list)
    always: ChannelError | None = None

    async def send(self, message: OutgoingMessage) -> None:
        self.tries.append(message)
        failure = self.failures.pop(0) if self.failures else self.always
        if failure is not None:
            raise failure
        self.sent.append(message)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> list[float]:
    """The courier's backoff sleeps, recorded instead of waited; each one moves the clock."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr(courier_module, "asyncio", SimpleNamespace(sleep=sleep))
    return pauses


def command(
    keyring: Keyring,
    clock: FakeClock,
    channel: str = "whatsapp",
    fallbacks: tuple[str, ...] = ("sms", "email"),
    ttl: timedelta = timedelta(minutes=10),
    template: str = "verify",
) -> OutboxMessage:
    """A code for Ada as the flows write it: phones masked in clear, sealed for the courier."""
    message_id = events.new_id()

    def route(name: str) -> dict[str, str | None]:
        if name == "email":
            return {"channel": name, "to": EMAIL, "to_ciphertext": None}
        sealed = keyring.encrypt(PHONE, events.recipient_context(message_id))
        return {"channel": name, "to": mask_phone(PHONE), "to_ciphertext": sealed}

    first = route(channel)
    return events.delivery(
        message_id=message_id,
        key=KEY,
        channel=channel,
        to=str(first["to"]),
        to_ciphertext=first["to_ciphertext"],
        template=template,
        now=clock.now,
        expires_at=clock.now + ttl,
        code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        variables={"name": "Ada", "minutes": "10"},
        fallbacks=[route(c) for c in fallbacks],
    )


def raw(message: OutboxMessage | dict[str, Any]) -> bytes:
    payload = message.payload if isinstance(message, OutboxMessage) else message
    return json.dumps(payload).encode()


Run = Callable[..., Awaitable[str]]


@pytest.fixture
def run(keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog) -> Run:
    async def run(
        message: OutboxMessage | dict[str, Any] | bytes,
        *channels: ScriptedChannel,
        attempts: int = 3,
        first_backoff: float = 0.5,
    ) -> str:
        courier = Courier(
            MemoryBus().source(events.SEND_OTP),
            keyring=keyring,
            renderer=Templates(),
            channels={c.name: c for c in channels},
            clock=clock,
            deliveries=log,
            attempts=attempts,
            first_backoff=first_backoff,
        )
        return await courier.deliver(message if isinstance(message, bytes) else raw(message), KEY)

    return run


def outcome_events(log: MemoryDeliveryLog) -> list[dict[str, Any]]:
    return [m.payload for _seq, m, _published in log.db.tables.outbox]


# --- fallback, retries, expiry --------------------------------------------------------------


async def test_permanent_failures_fall_back_in_the_commands_order(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, slept: list[float]
) -> None:
    whatsapp = ScriptedChannel("whatsapp", always=PERMANENT)
    sms = ScriptedChannel("sms", always=PERMANENT)
    email = ScriptedChannel("email")
    message = command(keyring, clock)
    assert await run(message, whatsapp, sms, email) == "sent"

    assert (len(whatsapp.tries), len(sms.tries), len(email.sent)) == (1, 1, 1)
    assert slept == []  # a permanent failure is not retried
    # Phones get the real number, opened by the courier, and the one-line text.
    assert whatsapp.tries[0].to == sms.tries[0].to == PHONE
    assert sms.tries[0].subject == ""
    assert sms.tries[0].body == f"Gatehouse: your code is {CODE}. It expires in 10 minutes."
    assert email.sent[0].to == EMAIL and email.sent[0].subject == "Your Gatehouse code"
    assert CODE in email.sent[0].body
    assert log.records[message.id] == DeliveryRecord(
        message.id, "sent", "email", 3, "sms: Twilio 400 error 21211", clock.now, clock.now
    )
    [event] = outcome_events(log)
    assert event["type"] == events.MESSAGE_SENT and event["subject"] == KEY
    assert event["data"] == {
        "user_id": KEY,
        "message_id": message.id,
        "channel": "email",
        "template": "verify",
    }


async def test_transient_failures_back_off_then_fall_back(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, slept: list[float]
) -> None:
    progress: list[tuple[str, int]] = []
    whatsapp = ScriptedChannel("whatsapp", always=TRANSIENT)
    sms = ScriptedChannel("sms", failures=[TRANSIENT])
    original = whatsapp.send

    async def watched(message: OutgoingMessage) -> None:
        record = log.records.get(message.id)
        progress.append((record.status, record.attempts) if record else ("none", 0))
        await original(message)

    whatsapp.send = watched  # type: ignore[method-assign]
    message = command(keyring, clock)
    assert await run(message, whatsapp, sms, attempts=3, first_backoff=0.5) == "sent"

    assert len(whatsapp.tries) == 3 and len(sms.tries) == 2
    assert slept == [0.5, 1.0, 0.5]  # doubling per channel, none after a channel's last try
    # Leased before the first try; between tries the record says how far it got.
    assert progress == [("sending", 0), ("sending", 1), ("sending", 2)]
    record = log.records[message.id]
    assert (record.status, record.channel, record.attempts) == ("sent", "sms", 5)


async def test_a_channel_failing_transiently_without_fallback_is_abandoned(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, slept: list[float]
) -> None:
    sms = ScriptedChannel("sms", always=TRANSIENT)
    message = command(keyring, clock, channel="sms", fallbacks=())
    assert await run(message, sms, attempts=4, first_backoff=0.25) == "abandoned"
    assert len(sms.tries) == 4 and sms.sent == []
    assert slept == [0.25, 0.5, 1.0]
    record = log.records[message.id]
    assert (record.status, record.channel, record.attempts) == ("abandoned", "sms", 4)
    [event] = outcome_events(log)
    assert event["type"] == events.MESSAGE_ABANDONED
    assert event["data"]["reason"] == "sms: Twilio 503" == record.last_error


async def test_expiry_is_checked_before_every_attempt(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, slept: list[float]
) -> None:
    whatsapp = ScriptedChannel("whatsapp", always=TRANSIENT)
    email = ScriptedChannel("email")
    message = command(keyring, clock, fallbacks=("email",), ttl=timedelta(seconds=300))
    # Each backoff moves the clock: 200 s, then 400 s more, past the 300 s lifetime.
    assert await run(message, whatsapp, email, attempts=5, first_backoff=200) == "abandoned"
    assert len(whatsapp.tries) == 2
    assert email.tries == []  # not even the fallback gets an expired code
    record = log.records[message.id]
    assert (record.status, record.attempts) == ("abandoned", 2)
    assert outcome_events(log)[0]["data"]["reason"] == "expired before it could be sent"


async def test_an_expired_command_is_never_sent(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    whatsapp, sms = ScriptedChannel("whatsapp"), ScriptedChannel("sms")
    message = command(keyring, clock, fallbacks=("sms",))
    clock.advance(600)
    assert await run(message, whatsapp, sms) == "abandoned"
    assert whatsapp.tries == sms.tries == []
    assert log.records[message.id].status == "abandoned"


async def test_a_missing_channel_or_a_foreign_recipient_moves_to_the_next_route(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    sms, email = ScriptedChannel("sms"), ScriptedChannel("email")
    message = command(keyring, clock)  # whatsapp (not configured) -> sms -> email
    payload = message.payload
    # The sms number sealed for another message cannot be opened for this one.
    payload["fallbacks"][0]["to_ciphertext"] = keyring.encrypt(
        PHONE, events.recipient_context(events.new_id())
    )
    assert await run(payload, sms, email) == "sent"
    assert sms.tries == [] and len(email.sent) == 1
    record = log.records[message.id]
    assert (record.channel, record.attempts) == ("email", 1)
    assert record.last_error == "sms: recipient cannot be decrypted"


# --- de-duplication and records -------------------------------------------------------------


@pytest.mark.parametrize("first", ["sent", "abandoned"])
async def test_a_redelivered_command_is_not_sent_again(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, first: str
) -> None:
    sms = ScriptedChannel("sms", always=PERMANENT if first == "abandoned" else None)
    message = command(keyring, clock, channel="sms", fallbacks=())
    assert await run(message, sms) == first
    assert await run(message, sms) == "duplicate"
    assert len(sms.tries) == 1
    assert len(outcome_events(log)) == 1


async def test_an_interrupted_sending_is_resumed_and_keeps_counting(
    run: Run, keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    sms = ScriptedChannel("sms")
    message = command(keyring, clock, channel="sms", fallbacks=())
    await log.record(message.id, "sending", "sms", 2, "sms: Twilio 503", None, clock.now)
    assert await run(message, sms) == "sent"
    assert log.records[message.id].attempts == 3


async def test_a_malformed_command_with_an_id_is_recorded_abandoned(
    run: Run, log: MemoryDeliveryLog
) -> None:
    email = ScriptedChannel("email")
    with pytest.raises(Unreadable):  # for the courier to dead-letter
        await run(b'{"id": "m-1", "template": "verify", "channel": "email"}', email)
    assert email.tries == []
    assert log.records["m-1"].status == "abandoned"
    [event] = outcome_events(log)
    assert event["subject"] == KEY and event["data"]["reason"].startswith("malformed command")
    # Without an id there is nothing to record against.
    with pytest.raises(Unreadable):
        await run(b"[]", email)
    assert len(log.records) == 1


async def test_no_phone_number_or_code_in_logs_records_or_events(
    run: Run,
    keyring: Keyring,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    slept: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    whatsapp = ScriptedChannel("whatsapp", always=TRANSIENT)
    sms = ScriptedChannel("sms", always=PERMANENT)
    message = command(keyring, clock, fallbacks=("sms",))
    assert await run(message, whatsapp, sms) == "abandoned"
    written = caplog.text + repr(log.records) + json.dumps(outcome_events(log))
    assert message.id in caplog.text
    for secret in (PHONE, PHONE[1:], CODE):
        assert secret not in written


# --- the courier process --------------------------------------------------------------------


async def test_the_courier_keys_the_event_by_the_commands_record_key(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    bus = MemoryBus()
    message = command(keyring, clock, channel="sms", fallbacks=())
    await bus.publish([Published(events.SEND_OTP, "user-7", raw(message), {})] * 2)
    sms = ScriptedChannel("sms")
    courier = Courier(
        bus.source(events.SEND_OTP),
        keyring=keyring,
        renderer=Templates(),
        channels={"sms": sms},
        clock=clock,
        deliveries=log,
    )
    deliveries = bus.source(events.SEND_OTP).deliveries()
    for _ in range(2):
        await courier.handle(await deliveries.__anext__())
    assert courier.outcomes == {"sent": 1, "abandoned": 0, "duplicate": 1}
    assert len(sms.sent) == 1
    [event] = outcome_events(log)
    assert event["subject"] == "user-7"


async def test_the_courier_waits_for_the_delivery_log_before_acknowledging(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(courier_module, "asyncio", SimpleNamespace(sleep=sleep))
    outages = [Unavailable("Database unavailable")] * 3
    real_claim = log.claim

    async def flaky_claim(message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        if outages:
            raise outages.pop()
        return await real_claim(message_id, owner, now, until)

    log.claim = flaky_claim  # type: ignore[method-assign]
    acks: list[int] = []

    async def ack() -> None:
        acks.append(1)

    sms = ScriptedChannel("sms")
    courier = Courier(
        MemoryBus().source(events.SEND_OTP),
        keyring=keyring,
        renderer=Templates(),
        channels={"sms": sms},
        clock=clock,
        deliveries=log,
        first_backoff=1.0,
        max_pause=3.0,
    )
    message = command(keyring, clock, channel="sms", fallbacks=())
    assert await courier.handle(Delivery(raw(message), ack, KEY)) == "sent"
    assert pauses == [1.0, 2.0, 3.0]
    assert acks == [1] and len(sms.sent) == 1


# --- texts, console, classification, channel choice -----------------------------------------


@pytest.mark.parametrize("name", ["verify", "verify-email", "password-reset", "account-exists"])
def test_every_template_has_a_short_one_line_text(name: str) -> None:
    subject, text = Templates().render(name, {"code": CODE, "minutes": "10"}, short=True)
    assert subject == "" and "\n" not in text and "$" not in text
    assert 0 < len(text) <= 160  # one SMS segment
    if name != "account-exists":
        assert CODE in text


async def test_the_console_prints_a_text_without_a_subject() -> None:
    import io

    stream = io.StringIO()
    await ConsoleChannel("sms", stream=stream).send(
        OutgoingMessage("m1", "sms", PHONE, "", f"Gatehouse: your code is {CODE}.")
    )
    printed = stream.getvalue()
    assert f"sms to {PHONE}" in printed and CODE in printed and "Subject" not in printed


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        *[(400, True), (401, True), (403, True), (404, True), (422, True)],
        *[(408, False), (429, False), (500, False), (502, False), (503, False), (504, False)],
    ],
)
def test_http_status_classes(status: int, permanent: bool) -> None:
    assert is_permanent(status) is permanent


TWILIO = {"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": "token"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"email": ConsoleChannel, "sms": ConsoleChannel, "whatsapp": ConsoleChannel}),
        (
            {"smtp_url": "smtp://127.0.0.1:1025"},
            {"email": SmtpChannel, "sms": ConsoleChannel, "whatsapp": ConsoleChannel},
        ),
        (
            {"email_provider": "sendgrid", "sendgrid_api_key": "SG.k", **TWILIO}
            | {"twilio_sms_from": "+15005550006"},
            {"email": SendGridChannel, "sms": TwilioSmsChannel},
        ),
        (
            {"env": "production", **TWILIO, "twilio_messaging_service_sid": "MG" + "1" * 32},
            {"sms": TwilioSmsChannel, "whatsapp": TwilioWhatsAppChannel},
        ),
        ({"env": "production"}, {}),
    ],
    ids=["development", "smtp", "sendgrid-and-twilio-sms", "production-twilio", "production"],
)
def test_channels_are_chosen_from_configuration(
    options: dict[str, Any], expected: dict[str, type]
) -> None:
    channels = bootstrap.build_channels(Settings(_env_file=None, **options))
    assert {name: type(c) for name, c in channels.items()} == expected
    assert all(c.name == n for n, c in channels.items() if n != "email")


@pytest.mark.parametrize(
    "options",
    [
        {"email_provider": "sendgrid"},
        {"email_provider": "smtp"},
        {"env": "production", "email_provider": "console"},
    ],
)
def test_incomplete_or_unsafe_email_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="GATEHOUSE_"):
        bootstrap.build_channels(Settings(_env_file=None, **options))
