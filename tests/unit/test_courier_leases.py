"""The courier's leases and dead letters on the memory adapters: two couriers racing one message
send it once; a live lease is left to its holder, an expired or released one is taken over; what
cannot be processed (garbage, a database down past the retry budget, a bug) goes to
`send-otp.dlq` with where it came from and why, and only then is acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatehouse import bootstrap
from gatehouse.config import Settings
from gatehouse.courier import consumer as courier_module
from gatehouse.courier import dead_letters as dead_letters_module
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring, generate_secrets_document
from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import ChannelError, Unavailable
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

CODE = "613402"
KEY = "user-7"
LEASE = 60.0


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(bootstrap.TOPICS)


class Mailer:
    """An email channel that records each message it accepts; `gate` (when set) holds every send
    until released, and `failures` are raised first, in order."""

    name = "email"

    def __init__(self, failures: list[ChannelError] | None = None, gate: bool = False):
        self.sent: list[OutgoingMessage] = []
        self.tries = 0
        self.failures = failures or []
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = asyncio.Event() if gate else None

    async def send(self, message: OutgoingMessage) -> None:
        self.tries += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)


def command(keyring: Keyring, clock: FakeClock, ttl: timedelta = timedelta(minutes=10)) -> bytes:
    message_id = events.new_id()
    return json.dumps(
        events.delivery(
            message_id=message_id,
            key=KEY,
            channel="email",
            to="ada@example.com",
            template="verify-email",
            now=clock.now,
            expires_at=clock.now + ttl,
            code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
            variables={"name": "Ada", "minutes": "10"},
        ).payload
    ).encode()


def message_id(raw: bytes) -> str:
    return str(json.loads(raw)["id"])


def delivery(raw: bytes, offset: int = 41) -> tuple[Delivery, list[int]]:
    acks: list[int] = []

    async def ack() -> None:
        acks.append(1)

    return Delivery(raw, ack, KEY, events.SEND_OTP, 2, offset), acks


def outcome_events(log: MemoryDeliveryLog) -> list[OutboxMessage]:
    return [m for _seq, m, _published in log.db.tables.outbox]


def dead_letters(bus: MemoryBus) -> list[Published]:
    return [p for p in bus.published if p.topic == events.SEND_OTP_DLQ]


def make_courier(
    keyring: Keyring,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    mailer: Mailer,
    bus: MemoryBus | None = None,
    **options: Any,
) -> Courier:
    settings: dict[str, Any] = {
        "attempts": 3,
        "first_backoff": 0.5,
        "lease": LEASE,
        "retry_budget": 10.0,
        "held_pause": 5.0,
        "monotonic": clock.monotonic,
    }
    settings.update(options)
    return Courier(
        (bus or MemoryBus()).source(events.SEND_OTP),
        keyring=keyring,
        renderer=Templates(),
        channels={"email": mailer},
        clock=clock,
        deliveries=log,
        dead_letters=bus,
        **settings,
    )


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> list[float]:
    """The courier's waits (backoffs, outages, leases, dead letters), recorded instead of waited:
    each moves the clock."""
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    fake = SimpleNamespace(sleep=sleep)
    monkeypatch.setattr(courier_module, "asyncio", fake)
    monkeypatch.setattr(dead_letters_module, "asyncio", fake)
    return waited


# --- leases -----------------------------------------------------------------------------------


async def test_two_couriers_racing_one_message_send_it_once(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    mailer = Mailer(gate=True)
    raw = command(keyring, clock)
    first = make_courier(keyring, clock, log, mailer, owner="courier-a", held_pause=0.001)
    second = make_courier(keyring, clock, log, mailer, owner="courier-b", held_pause=0.001)
    one, one_acks = delivery(raw)
    two, two_acks = delivery(raw)
    a = asyncio.create_task(first.handle(one))
    await asyncio.wait_for(mailer.entered.wait(), 5)  # courier-a holds the lease, mid-send
    b = asyncio.create_task(second.handle(two))
    for _ in range(20):  # courier-b meets the live lease again and again, and waits
        await asyncio.sleep(0.002)
    assert mailer.tries == 1 and two_acks == [] and not b.done()
    record = log.records[message_id(raw)]
    assert (record.status, record.lease_owner) == ("sending", "courier-a")

    mailer.gate.set()  # type: ignore[union-attr]
    assert await asyncio.wait_for(asyncio.gather(a, b), 5) == ["sent", "duplicate"]
    assert len(mailer.sent) == 1 and (one_acks, two_acks) == ([1], [1])
    [event] = outcome_events(log)
    assert event.payload["type"] == events.MESSAGE_SENT
    record = log.records[message_id(raw)]
    assert (record.status, record.lease_owner, record.lease_until) == ("sent", None, None)


async def test_exactly_one_of_many_claims_wins(log: MemoryDeliveryLog, clock: FakeClock) -> None:
    until = clock.now + timedelta(seconds=LEASE)
    claims = await asyncio.gather(*(log.claim("m-1", f"c{i}", clock.now, until) for i in range(20)))
    assert [c.won for c in claims].count(True) == 1
    winner = next(c for c in claims if c.won).record.lease_owner
    assert {c.record.lease_owner for c in claims} == {winner}
    # The holder renews; the others still lose until it expires, then one of them wins.
    assert (await log.claim("m-1", str(winner), clock.now, until)).won
    assert not (await log.claim("m-1", "late", clock.now, until)).won
    later = until + timedelta(seconds=1)
    assert (await log.claim("m-1", "late", later, later + timedelta(seconds=LEASE))).won


async def test_a_live_lease_is_left_to_its_holder_until_it_expires(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, pauses: list[float]
) -> None:
    raw = command(keyring, clock)
    expiry = clock.now + timedelta(seconds=LEASE)
    await log.claim(message_id(raw), "crashed-courier", clock.now, expiry)
    sent_at: list[datetime] = []
    mailer = Mailer()
    original = mailer.send

    async def watched(message: OutgoingMessage) -> None:
        sent_at.append(clock.now)
        await original(message)

    mailer.send = watched  # type: ignore[method-assign]
    handler = make_courier(keyring, clock, log, mailer, owner="courier-b")
    one, acks = delivery(raw)
    assert await handler.handle(one) == "sent"
    assert pauses == [5.0] * 12  # polled until the crashed courier's lease ran out
    assert sent_at == [expiry] and acks == [1]
    record = log.records[message_id(raw)]
    assert (record.status, record.attempts, record.lease_owner) == ("sent", 1, None)


async def test_an_expired_lease_is_taken_over_at_once_and_keeps_counting(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, pauses: list[float]
) -> None:
    raw = command(keyring, clock)
    before = clock.now - timedelta(seconds=2 * LEASE)
    await log.claim(message_id(raw), "crashed-courier", before, before + timedelta(seconds=LEASE))
    await log.record(message_id(raw), "sending", "email", 2, "email: SMTP 451", None, before)
    mailer = Mailer()
    assert await make_courier(keyring, clock, log, mailer).handle(delivery(raw)[0]) == "sent"
    assert pauses == [] and len(mailer.sent) == 1
    assert log.records[message_id(raw)].attempts == 3


async def test_a_released_message_is_queued_and_taken_at_once(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, pauses: list[float]
) -> None:
    raw = command(keyring, clock)
    until = clock.now + timedelta(seconds=LEASE)
    await log.claim(message_id(raw), "stopping-courier", clock.now, until)
    await log.release(message_id(raw), "someone-else", clock.now)  # not theirs: no effect
    assert log.records[message_id(raw)].status == "sending"
    await log.release(message_id(raw), "stopping-courier", clock.now)
    record = log.records[message_id(raw)]
    assert (record.status, record.lease_owner, record.lease_until) == ("queued", None, None)
    mailer = Mailer()
    assert await make_courier(keyring, clock, log, mailer).handle(delivery(raw)[0]) == "sent"
    assert pauses == [] and len(mailer.sent) == 1


async def test_the_same_command_delivered_three_times_is_sent_once(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    raw = command(keyring, clock)
    mailer = Mailer()
    handler = make_courier(keyring, clock, log, mailer)
    results = [await handler.handle(delivery(raw)[0]) for _ in range(3)]
    assert results == ["sent", "duplicate", "duplicate"]
    assert len(mailer.sent) == 1 and len(outcome_events(log)) == 1
    assert handler.outcomes == {"sent": 1, "abandoned": 0, "duplicate": 2}


async def test_a_courier_that_lost_its_lease_stops_before_its_next_try(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, pauses: list[float]
) -> None:
    """Its backoff outlasted the lease and another courier took the message: it must not send."""
    raw = command(keyring, clock)
    mailer = Mailer(failures=[ChannelError("SMTP 451", permanent=False)])
    original_record = log.record

    async def record_then_lose(*args: Any, **kwargs: Any) -> bool:
        written = await original_record(*args, **kwargs)
        later = clock.now + timedelta(seconds=2 * LEASE)
        assert (await log.claim(message_id(raw), "courier-b", later, later)).won
        return written

    log.record = record_then_lose  # type: ignore[method-assign]
    courier = make_courier(keyring, clock, log, mailer, owner="courier-a")
    outcome = await courier.deliver(raw, KEY)  # one pass: no polling of the lease that is lost
    assert outcome == "held"
    assert mailer.tries == 1 and mailer.sent == []
    assert log.records[message_id(raw)].lease_owner == "courier-b"


async def test_an_outcome_recorded_first_by_another_courier_stands(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    raw = command(keyring, clock)
    mid = message_id(raw)
    event = events.user_event(events.MESSAGE_SENT, KEY, {"message_id": mid}, clock.now)
    assert await log.record(mid, "sent", "email", 1, None, event, clock.now)
    late = events.user_event(events.MESSAGE_ABANDONED, KEY, {"message_id": mid}, clock.now)
    assert not await log.record(mid, "abandoned", "email", 5, "x", late, clock.now)
    assert not await log.record(mid, "sending", "email", 5, "x", None, clock.now)
    assert log.records[mid].status == "sent" and outcome_events(log) == [event]


async def test_stopping_between_tries_releases_the_lease(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    bus = MemoryBus(bootstrap.TOPICS)
    raw = command(keyring, clock)
    await bus.publish([Published(events.SEND_OTP, KEY, raw, {})])
    mailer = Mailer(failures=[ChannelError("SMTP 451", permanent=False)])
    handler = make_courier(
        keyring, clock, log, mailer, bus=bus, first_backoff=30.0, stop_grace=0.05
    )
    stop = asyncio.Event()
    task = asyncio.create_task(handler.run(stop))
    await asyncio.wait_for(mailer.entered.wait(), 5)
    while log.records[message_id(raw)].attempts == 0:  # the failed try is written down
        await asyncio.sleep(0.001)
    stop.set()  # during the 30 s backoff: not worth waiting for
    await asyncio.wait_for(task, 5)
    record = log.records[message_id(raw)]
    assert (record.status, record.lease_owner, record.attempts) == ("queued", None, 1)
    assert mailer.sent == [] and dead_letters(bus) == []


# --- dead letters -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\xff\xfegarbage", b"[]", b'{"id": "m-1"}'])
async def test_garbage_goes_to_the_dead_letter_topic(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, bus: MemoryBus, value: bytes
) -> None:
    mailer = Mailer()
    handler = make_courier(keyring, clock, log, mailer, bus=bus)
    one, acks = delivery(value, offset=1234)
    assert await handler.handle(one) == "dead-lettered"
    assert acks == [1] and mailer.tries == 0
    [letter] = dead_letters(bus)
    assert (letter.key, letter.value) == (KEY, value)  # as it came
    assert letter.headers["dlq-original-topic"] == events.SEND_OTP
    assert letter.headers["dlq-original-partition"] == "2"
    assert letter.headers["dlq-original-offset"] == "1234"
    assert letter.headers["dlq-error-class"] == "Unreadable"
    assert letter.headers["dlq-error"].startswith("malformed command: ")
    assert handler.outcomes["dead-lettered"] == 1


async def test_an_unreadable_code_is_dead_lettered_sealed_and_recorded_abandoned(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, bus: MemoryBus
) -> None:
    payload = json.loads(command(keyring, clock))
    payload["id"] = events.new_id()  # the code's ciphertext is bound to the original id
    raw = json.dumps(payload).encode()
    handler = make_courier(keyring, clock, log, Mailer(), bus=bus)
    assert await handler.handle(delivery(raw)[0]) == "dead-lettered"
    [letter] = dead_letters(bus)
    assert letter.value == raw and CODE not in json.dumps(letter.headers)
    assert letter.headers["dlq-error"] == "malformed command: DecryptionError"
    assert log.records[payload["id"]].status == "abandoned"
    [event] = outcome_events(log)
    assert event.payload["type"] == events.MESSAGE_ABANDONED


async def test_a_database_down_past_the_budget_is_retried_then_dead_lettered(
    keyring: Keyring,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    bus: MemoryBus,
    pauses: list[float],
) -> None:
    async def down(*_args: Any) -> Claim:
        raise Unavailable("Database unavailable")

    log.claim = down  # type: ignore[method-assign]
    mailer = Mailer()
    handler = make_courier(keyring, clock, log, mailer, bus=bus, retry_budget=10.0)
    one, acks = delivery(command(keyring, clock))
    assert await handler.handle(one) == "dead-lettered"
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0]  # backing off, then past the 10 s budget
    assert acks == [1] and mailer.tries == 0
    [letter] = dead_letters(bus)
    assert letter.headers["dlq-error-class"] == "Unavailable"
    assert letter.headers["dlq-error"] == "Database unavailable"
    assert letter.value == one.value


async def test_a_database_back_within_the_budget_but_after_expiry_sends_nothing(
    keyring: Keyring,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    bus: MemoryBus,
    pauses: list[float],
) -> None:
    real_claim = log.claim
    outages = 4

    async def flaky(message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        nonlocal outages
        if outages:
            outages -= 1
            raise Unavailable("Database unavailable")
        return await real_claim(message_id, owner, now, until)

    log.claim = flaky  # type: ignore[method-assign]
    mailer = Mailer()
    handler = make_courier(keyring, clock, log, mailer, bus=bus, retry_budget=600.0)
    raw = command(keyring, clock, ttl=timedelta(seconds=5))
    assert await handler.handle(delivery(raw)[0]) == "abandoned"
    assert sum(pauses) > 5  # the code expired while the courier waited for the database
    assert mailer.tries == 0 and dead_letters(bus) == []
    assert log.records[message_id(raw)].last_error == "expired before it could be sent"


async def test_an_outcome_not_recorded_is_written_again_never_sent_again(
    keyring: Keyring,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    bus: MemoryBus,
    pauses: list[float],
) -> None:
    real_record = log.record
    outages = 3

    async def flaky(*args: Any, **kwargs: Any) -> bool:
        nonlocal outages
        if args[1] == "sent" and outages:
            outages -= 1
            raise Unavailable("Database unavailable")
        return await real_record(*args, **kwargs)

    log.record = flaky  # type: ignore[method-assign]
    mailer = Mailer()
    handler = make_courier(keyring, clock, log, mailer, bus=bus)
    raw = command(keyring, clock)
    one, acks = delivery(raw)
    assert await handler.handle(one) == "sent"
    assert len(mailer.sent) == 1 and mailer.tries == 1
    assert pauses == [0.5, 1.0, 2.0] and acks == [1]
    assert log.records[message_id(raw)].status == "sent"
    assert len(outcome_events(log)) == 1 and dead_letters(bus) == []


async def test_a_bug_is_dead_lettered_with_its_class_only(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, bus: MemoryBus
) -> None:
    class Broken(Mailer):
        async def send(self, message: OutgoingMessage) -> None:
            raise RuntimeError(f"a bug that quotes the body: {message.body}")

    handler = make_courier(keyring, clock, log, Broken(), bus=bus)
    one, acks = delivery(command(keyring, clock))
    assert await handler.handle(one) == "dead-lettered"
    [letter] = dead_letters(bus)
    assert letter.headers["dlq-error-class"] == "RuntimeError"
    assert "dlq-error" not in letter.headers and CODE not in json.dumps(letter.headers)
    assert acks == [1]


async def test_nothing_is_acknowledged_before_the_dead_letter_topic_has_it(
    keyring: Keyring, clock: FakeClock, log: MemoryDeliveryLog, pauses: list[float]
) -> None:
    class FlakyKafka(MemoryBus):
        failures = 2

        async def publish(self, records: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise Unavailable("Kafka did not acknowledge 1 records")
            await super().publish(records)

    kafka = FlakyKafka()
    handler = make_courier(keyring, clock, log, Mailer(), bus=kafka)
    one, acks = delivery(b"garbage")
    ack_seen_letters: list[int] = []
    original_ack: Callable[[], Awaitable[None]] = one.ack

    async def ack() -> None:
        ack_seen_letters.append(len(dead_letters(kafka)))
        await original_ack()

    one.ack = ack
    assert await handler.handle(one) == "dead-lettered"
    assert pauses == [0.5, 1.0] and ack_seen_letters == [1] and acks == [1]


# --- wiring -----------------------------------------------------------------------------------


def test_the_dead_letter_topic_is_made_with_the_others_and_embedded_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert events.SEND_OTP_DLQ == "send-otp.dlq" and events.SEND_OTP_DLQ in bootstrap.TOPICS
    (tmp_path / "secrets.json").write_text(json.dumps(generate_secrets_document()))
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        secrets_file=tmp_path / "secrets.json",
    )
    services = bootstrap.build(settings)
    try:
        assert services.bus is not None and events.SEND_OTP_DLQ in services.bus.topics
        assert services.dead_letters() is services.bus
    finally:
        asyncio.run(services.aclose())


async def test_a_record_without_a_lease_is_claimable(
    log: MemoryDeliveryLog, clock: FakeClock
) -> None:
    """Rows written before leases existed (or by tools) have none: anyone may take them."""
    await log.record("m-2", "sending", "sms", 2, "sms: Twilio 503", None, clock.now)
    assert log.records["m-2"] == DeliveryRecord(
        "m-2", "sending", "sms", 2, "sms: Twilio 503", clock.now, clock.now
    )
    claim = await log.claim("m-2", "c", clock.now, clock.now + timedelta(seconds=LEASE))
    assert claim.won and claim.record.attempts == 2
