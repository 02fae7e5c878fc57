"""courier.delivery and courier.consumer: open a `send-otp` command, render it, send it through
its channel; retry what is transient, abandon what never can be delivered, always acknowledge."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import timedelta
from typing import Any

import orjson
import pytest

from gatehouse.courier.channels.console import ConsoleChannel
from gatehouse.courier.consumer import Courier
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.errors import ChannelError, UnknownTemplate, Unreadable
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.relay import to_published
from gatehouse.ports import OutboxRecord, OutgoingMessage, Published
from tests.fakes import MemoryDeliveryLog

from .helpers import FakeClock, RecordingChannel, acked_delivery

CODE = "042917"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([("k1", os.urandom(32))])


@pytest.fixture
def templates() -> Templates:
    return Templates()


def command(
    keyring: Keyring,
    clock: FakeClock,
    *,
    code: str | None = CODE,
    template: str = "verify-email",
    channel: str = "email",
    ttl: timedelta = timedelta(minutes=10),
    variables: dict[str, str] | None = None,
) -> dict[str, Any]:
    message_id = events.new_id()
    return events.delivery(
        message_id=message_id,
        key="user-1",
        channel=channel,
        to="ada@example.com",
        template=template,
        now=clock.now,
        expires_at=clock.now + ttl,
        code_ciphertext=keyring.encrypt(code, events.code_context(message_id)) if code else None,
        variables={"name": "Ada", "minutes": "10"} if variables is None else variables,
    ).payload


def raw(payload: Any) -> bytes:
    return orjson.dumps(payload)


def deliverer(
    keyring: Keyring,
    templates: Templates,
    clock: FakeClock,
    channels: dict[str, Any],
    attempts: int = 1,
) -> Courier:
    """A courier for one pass at a command (`Courier.deliver`), its delivery log its own."""
    return Courier(
        MemoryBus().source(events.SEND_OTP),
        keyring=keyring,
        renderer=templates,
        channels=channels,
        clock=clock,
        deliveries=MemoryDeliveryLog(),
        attempts=attempts,
        first_backoff=0,
    )


async def run_deliver(
    value: bytes,
    keyring: Keyring,
    templates: Templates,
    clock: FakeClock,
    channels: dict[str, Any],
) -> str:
    return await deliverer(keyring, templates, clock, channels).deliver(value)


class TestDeliver:
    async def test_renders_the_code_into_the_body(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock)
        outcome = await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert outcome == "sent"
        [message] = email.sent
        assert message.id == payload["id"]
        assert message.to == "ada@example.com"
        assert message.channel == "email"
        assert CODE in message.body
        assert "Ada" not in message.body  # no name in mail to an address not yet proven
        assert "10 minutes" in message.body
        assert "$" not in message.body  # every placeholder filled
        assert message.subject == templates.render("verify-email", {})[0]
        assert CODE not in message.subject

    async def test_the_relay_encoding_is_what_the_courier_reads(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        message_id = events.new_id()
        message = events.delivery(
            message_id=message_id,
            key="k",
            channel="email",
            to="ada@example.com",
            template="verify-email",
            now=clock.now,
            expires_at=clock.now + timedelta(minutes=10),
            code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        )
        published = to_published(OutboxRecord(1, message))
        email = RecordingChannel("email")
        assert await run_deliver(published.value, keyring, templates, clock, {"email": email}) == (
            "sent"
        )
        assert CODE in email.sent[0].body

    async def test_message_without_code(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock, code=None, template="account-exists", variables={})
        assert await run_deliver(raw(payload), keyring, templates, clock, {"email": email}) == (
            "sent"
        )
        assert "already exists" in email.sent[0].body

    @pytest.mark.parametrize("age", [timedelta(minutes=10), timedelta(hours=1)])
    async def test_expired_is_abandoned_unsent(
        self, keyring: Keyring, templates: Templates, clock: FakeClock, age: timedelta
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock)
        clock.advance(age.total_seconds())
        outcome = await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert outcome == "abandoned"
        assert email.attempts == 0

    async def test_just_before_expiry_is_sent(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock)
        clock.advance(599)
        assert await run_deliver(raw(payload), keyring, templates, clock, {"email": email}) == (
            "sent"
        )

    async def test_unknown_template(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock, template="no-such-template")
        outcome = await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert outcome == "abandoned"
        assert email.attempts == 0

    async def test_unknown_channel(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        payload = command(keyring, clock, channel="sms")
        outcome = await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert outcome == "abandoned"
        assert email.attempts == 0

    async def test_code_under_another_key_or_message(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        moved = command(keyring, clock)
        moved["id"] = events.new_id()  # the ciphertext is bound to the original id
        foreign = command(Keyring([("k1", os.urandom(32))]), clock)
        for payload in (moved, foreign):
            with pytest.raises(Unreadable):
                await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert email.attempts == 0

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b"\xff\xfe\x00garbage",
            b"not json at all",
            b"[]",
            b"null",
            b"42",
            b'"a string"',
            b"{}",
            b'{"id": "x"}',
            b'{"id": "x", "expires_at": "yesterday", "template": "verify-email",'
            b' "channel": "email", "to": "a@example.com"}',
            b'{"id": "x", "expires_at": "2999-01-01T00:00:00Z", "template": "verify-email",'
            b' "channel": "email", "to": "a@example.com", "variables": ["not", "a", "dict"]}',
            b'{"id": "x", "expires_at": "2999-01-01T00:00:00Z", "template": "verify-email",'
            b' "channel": "email", "to": "a@example.com", "code_ciphertext": "v1.k1.AAAA"}',
            b'{"id": "x", "expires_at": 12, "template": "verify-email",'
            b' "channel": "email", "to": "a@example.com"}',
        ],
    )
    async def test_garbage_is_unreadable(
        self, keyring: Keyring, templates: Templates, clock: FakeClock, value: bytes
    ) -> None:
        email = RecordingChannel("email")
        with pytest.raises(Unreadable):  # the courier dead-letters it
            await run_deliver(value, keyring, templates, clock, {"email": email})
        assert email.attempts == 0

    @pytest.mark.parametrize("expires_at", ["2999-01-01T00:00:00", "2999-01-01"])
    async def test_expiry_without_time_zone_is_unreadable(
        self, keyring: Keyring, templates: Templates, clock: FakeClock, expires_at: str
    ) -> None:
        """A naive `expires_at` compared with the aware clock raised TypeError out of `deliver`:
        the courier's consume loop died on it unacknowledged, and met it again after a restart."""
        email = RecordingChannel("email")
        payload = command(keyring, clock)
        payload["expires_at"] = expires_at
        with pytest.raises(Unreadable):
            await run_deliver(raw(payload), keyring, templates, clock, {"email": email})
        assert email.attempts == 0

    async def test_transient_error_is_retried_within_the_attempts(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email", failures=[ChannelError("421 busy", permanent=False)])
        outcome = await deliverer(keyring, templates, clock, {"email": email}, attempts=2).deliver(
            raw(command(keyring, clock))
        )
        assert outcome == "sent"
        assert email.attempts == 2
        assert CODE in email.sent[0].body

    async def test_transient_error_on_the_last_attempt_is_abandoned(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email", failures=[ChannelError("421 busy", permanent=False)])
        outcome = await run_deliver(
            raw(command(keyring, clock)), keyring, templates, clock, {"email": email}
        )
        assert outcome == "abandoned"
        assert email.attempts == 1
        assert email.sent == []

    async def test_permanent_error_is_abandoned(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel(
            "email", failures=[ChannelError("550 no such user", permanent=True)]
        )
        outcome = await run_deliver(
            raw(command(keyring, clock)), keyring, templates, clock, {"email": email}
        )
        assert outcome == "abandoned"
        assert email.attempts == 1


def courier(
    keyring: Keyring,
    templates: Templates,
    clock: FakeClock,
    channel: RecordingChannel,
    attempts: int = 3,
    source: Any = None,
) -> Courier:
    return Courier(
        source or MemoryBus().source(events.SEND_OTP),
        keyring=keyring,
        renderer=templates,
        channels={channel.name: channel},
        clock=clock,
        deliveries=MemoryDeliveryLog(),
        attempts=attempts,
        first_backoff=0,
    )


class TestCourier:
    async def test_sends_and_acks(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        handler = courier(keyring, templates, clock, email)
        delivery, acks = acked_delivery(raw(command(keyring, clock)))
        assert await handler.handle(delivery) == "sent"
        assert acks == [1]
        assert len(email.sent) == 1
        assert handler.outcomes == {"sent": 1, "abandoned": 0}

    async def test_retries_a_transient_error_then_succeeds(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel(
            "email",
            failures=[
                ChannelError("421", permanent=False),
                ChannelError("timeout", permanent=False),
            ],
        )
        handler = courier(keyring, templates, clock, email, attempts=3)
        delivery, acks = acked_delivery(raw(command(keyring, clock)))
        assert await handler.handle(delivery) == "sent"
        assert email.attempts == 3
        assert len(email.sent) == 1
        assert CODE in email.sent[0].body
        assert acks == [1]

    async def test_gives_up_after_the_configured_attempts(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel(
            "email", failures=[ChannelError("421", permanent=False) for _ in range(10)]
        )
        handler = courier(keyring, templates, clock, email, attempts=4)
        delivery, acks = acked_delivery(raw(command(keyring, clock)))
        assert await handler.handle(delivery) == "abandoned"
        assert email.attempts == 4
        assert email.sent == []
        assert acks == [1]
        assert handler.outcomes == {"sent": 0, "abandoned": 1}

    async def test_backs_off_exponentially_between_attempts(
        self,
        keyring: Keyring,
        templates: Templates,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        # Wherever the retry loop lives (flow or entrypoint), it waits with asyncio.sleep.
        monkeypatch.setattr(asyncio, "sleep", sleep)
        email = RecordingChannel(
            "email", failures=[ChannelError("421", permanent=False) for _ in range(10)]
        )
        handler = Courier(
            MemoryBus().source(events.SEND_OTP),
            keyring=keyring,
            renderer=templates,
            channels={"email": email},
            clock=clock,
            deliveries=MemoryDeliveryLog(),
            attempts=4,
            first_backoff=0.5,
        )
        delivery, _acks = acked_delivery(raw(command(keyring, clock)))
        await handler.handle(delivery)
        assert slept == [0.5, 1.0, 2.0]  # none after the last attempt

    async def test_permanent_error_is_abandoned_at_once(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel(
            "email",
            failures=[ChannelError("550", permanent=True), ChannelError("x", permanent=True)],
        )
        handler = courier(keyring, templates, clock, email, attempts=5)
        delivery, acks = acked_delivery(raw(command(keyring, clock)))
        assert await handler.handle(delivery) == "abandoned"
        assert email.attempts == 1
        assert acks == [1]

    async def test_an_unexpected_error_is_acked_and_the_courier_goes_on(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        class Broken(RecordingChannel):
            async def send(self, message: OutgoingMessage) -> None:
                self.attempts += 1
                if self.attempts == 1:
                    raise RuntimeError("a bug in a channel")
                await super().send(message)

        email = Broken("email")
        handler = courier(keyring, templates, clock, email)
        first, first_acks = acked_delivery(raw(command(keyring, clock)))
        second, second_acks = acked_delivery(raw(command(keyring, clock)))
        assert await handler.handle(first) == "dead-lettered"
        assert await handler.handle(second) == "sent"
        assert (first_acks, second_acks) == ([1], [1])

    @pytest.mark.parametrize("value", [b"garbage", b"{}"])
    async def test_garbage_is_acked(
        self, keyring: Keyring, templates: Templates, clock: FakeClock, value: bytes
    ) -> None:
        email = RecordingChannel("email")
        handler = courier(keyring, templates, clock, email)
        delivery, acks = acked_delivery(value)
        assert await handler.handle(delivery) == "dead-lettered"
        assert acks == [1]
        assert email.attempts == 0

    async def test_expired_is_acked_unsent(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        email = RecordingChannel("email")
        handler = courier(keyring, templates, clock, email)
        delivery, acks = acked_delivery(raw(command(keyring, clock)))
        clock.advance(3600)
        assert await handler.handle(delivery) == "abandoned"
        assert acks == [1]
        assert email.attempts == 0

    async def test_run_consumes_the_bus_until_stopped(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        bus = MemoryBus()
        payloads = [command(keyring, clock, code=f"{n:06d}") for n in (1, 2, 3)]
        await bus.publish(
            [Published(events.SEND_OTP, "k", raw(p), {}) for p in payloads]
            + [Published(events.USER_EVENTS, "k", b"{}", {})]
        )
        all_sent = asyncio.Event()

        class Signalling(RecordingChannel):
            async def send(self, message: OutgoingMessage) -> None:
                await super().send(message)
                if len(self.sent) == len(payloads):
                    all_sent.set()

        email = Signalling("email")
        handler = courier(keyring, templates, clock, email, source=bus.source(events.SEND_OTP))
        stop = asyncio.Event()
        task = asyncio.create_task(handler.run(stop))
        await asyncio.wait_for(all_sent.wait(), timeout=10)
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        assert [m.id for m in email.sent] == [p["id"] for p in payloads]
        assert "000001" in email.sent[0].body
        assert "000003" in email.sent[2].body
        assert handler.outcomes == {"sent": 3, "abandoned": 0}

    async def test_stopping_closes_the_channels_that_keep_connections(
        self, keyring: Keyring, templates: Templates, clock: FakeClock
    ) -> None:
        class Keeping(RecordingChannel):
            closed = 0

            async def aclose(self) -> None:
                self.closed += 1

        class Failing(Keeping):
            async def aclose(self) -> None:
                raise ConnectionError("already gone")

        email, sms = Keeping("email"), Failing("sms")
        handler = courier(keyring, templates, clock, email)
        handler._channels = {"sms": sms, "email": email, "console": ConsoleChannel("console")}
        stop = asyncio.Event()
        task = asyncio.create_task(handler.run(stop))
        stop.set()
        await asyncio.wait_for(task, timeout=10)  # one that fails to close stops no other
        assert email.closed == 1


class TestTemplatesAndConsole:
    def test_every_shipped_template_renders(self, templates: Templates) -> None:
        for name in ("verify-email", "account-exists"):
            subject, body = templates.render(name, {"code": CODE, "name": "Ada", "minutes": "10"})
            assert subject
            assert "\n" not in subject
            assert body.strip()
        assert CODE in templates.render("verify-email", {"code": CODE})[1]

    def test_unknown_template(self, templates: Templates) -> None:
        with pytest.raises(UnknownTemplate):
            templates.render("nope", {})

    def test_variables_are_not_re_expanded(self, templates: Templates) -> None:
        _subject, body = templates.render("verify-email", {"code": "$minutes ${minutes}"})
        assert "$minutes ${minutes}" in body

    async def test_console_prints_the_message(self) -> None:
        stream = io.StringIO()
        await ConsoleChannel("console", stream=stream).send(
            OutgoingMessage("m1", "email", "ada@example.com", "Your code", f"Code: {CODE}")
        )
        printed = stream.getvalue()
        assert "ada@example.com" in printed
        assert "Your code" in printed
        assert CODE in printed
