"""courier.delivery.decide on its own: each outcome (Sent, RetryLater, FallBack, Abandoned) and
the attempt history that leads to it, with no delivery log, lease or sleep involved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from gatehouse.courier.delivery import (
    EXPIRED,
    Abandoned,
    Command,
    FallBack,
    History,
    Outcome,
    Retry,
    RetryLater,
    Route,
    Sent,
    decide,
    parse,
)
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.users import mask_phone
from gatehouse.errors import ChannelError, Unreadable
from gatehouse.ports import OutgoingMessage

from .helpers import FakeClock

PHONE = "+14155550123"
CODE = "204816"
BUSY = ChannelError("Twilio 503", permanent=False)
REFUSED = ChannelError("Twilio 400 error 21211", permanent=True)
RETRY = Retry(attempts=3, first_backoff=0.5)


@dataclass
class Scripted:
    """A channel answering each try from `answers` (None: accepted), then accepting."""

    name: str
    answers: list[ChannelError | None] = field(default_factory=list)
    tries: list[OutgoingMessage] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> None:
        self.tries.append(message)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


def command(
    keyring: Keyring,
    clock: FakeClock,
    routes: tuple[str, ...] = ("whatsapp", "sms", "email"),
    ttl: timedelta = timedelta(minutes=10),
) -> Command:
    message_id = events.new_id()

    def route(name: str) -> dict[str, str | None]:
        if name == "email":
            return {"channel": name, "to": "ada@example.com", "to_ciphertext": None}
        sealed = keyring.encrypt(PHONE, events.recipient_context(message_id))
        return {"channel": name, "to": mask_phone(PHONE), "to_ciphertext": sealed}

    first, *fallbacks = routes
    payload = events.delivery(
        message_id=message_id,
        key="user-1",
        channel=first,
        to=str(route(first)["to"]),
        to_ciphertext=route(first)["to_ciphertext"],
        template="verify",
        now=clock.now,
        expires_at=clock.now + ttl,
        code_ciphertext=keyring.encrypt(CODE, events.code_context(message_id)),
        variables={"minutes": "10"},
        fallbacks=[route(c) for c in fallbacks],
    ).payload
    return parse(json.dumps(payload).encode(), keyring, "user-1")


async def one_try(
    cmd: Command,
    history: History,
    keyring: Keyring,
    clock: FakeClock,
    *channels: Scripted,
) -> Outcome:
    return await decide(
        cmd,
        history,
        channels={c.name: c for c in channels},
        keyring=keyring,
        renderer=Templates(),
        clock=clock,
        retry=RETRY,
    )


async def test_sent_on_the_first_try(keyring: Keyring, clock: FakeClock) -> None:
    whatsapp = Scripted("whatsapp")
    cmd = command(keyring, clock)
    outcome = await one_try(cmd, History(), keyring, clock, whatsapp)
    assert outcome == Sent("whatsapp", History(attempts=1))
    [message] = whatsapp.tries
    assert message.to == PHONE and CODE in message.body  # opened for the provider only


async def test_a_transient_failure_with_tries_left_is_retried_later_on_the_same_route(
    keyring: Keyring, clock: FakeClock
) -> None:
    cmd = command(keyring, clock)
    first = await one_try(cmd, History(), keyring, clock, Scripted("whatsapp", [BUSY]))
    history = History(attempts=1, tries=1, channel="whatsapp", error="whatsapp: Twilio 503")
    assert first == RetryLater(0.5, history)
    # The next try on the same route waits twice as long.
    second = await one_try(cmd, history, keyring, clock, Scripted("whatsapp", [BUSY]))
    assert second == RetryLater(1.0, History(2, 0, 2, "whatsapp", "whatsapp: Twilio 503"))


async def test_a_transient_failure_on_the_last_try_falls_back_at_once(
    keyring: Keyring, clock: FakeClock
) -> None:
    cmd = command(keyring, clock)
    history = History(attempts=2, tries=2, channel="whatsapp", error="whatsapp: Twilio 503")
    outcome = await one_try(cmd, history, keyring, clock, Scripted("whatsapp", [BUSY]))
    assert outcome == FallBack(History(3, 1, 0, "whatsapp", "whatsapp: Twilio 503"))


async def test_a_permanent_failure_falls_back_without_retrying(
    keyring: Keyring, clock: FakeClock
) -> None:
    cmd = command(keyring, clock)
    outcome = await one_try(cmd, History(), keyring, clock, Scripted("whatsapp", [REFUSED]))
    assert outcome == FallBack(History(1, 1, 0, "whatsapp", "whatsapp: Twilio 400 error 21211"))


async def test_an_unusable_route_falls_back_without_a_try(
    keyring: Keyring, clock: FakeClock
) -> None:
    cmd = command(keyring, clock)
    # No whatsapp channel configured: nothing tried, nothing counted.
    outcome = await one_try(cmd, History(attempts=4), keyring, clock, Scripted("sms"))
    assert outcome == FallBack(History(4, 1, 0, "whatsapp", "whatsapp: no such channel configured"))
    # A number sealed for another message cannot be opened for this one.
    foreign = keyring.encrypt(PHONE, events.recipient_context(events.new_id()))
    routes = (Route("sms", mask_phone(PHONE), foreign), *cmd.routes[2:])
    sealed_elsewhere = Command(cmd.id, cmd.key, cmd.template, cmd.variables, cmd.expires_at, routes)
    sms = Scripted("sms")
    outcome = await one_try(sealed_elsewhere, History(), keyring, clock, sms)
    assert outcome == FallBack(History(0, 1, 0, "sms", "sms: recipient cannot be decrypted"))
    assert sms.tries == []


async def test_the_last_route_failing_abandons_with_its_reason(
    keyring: Keyring, clock: FakeClock
) -> None:
    cmd = command(keyring, clock)
    history = History(attempts=4, route=2, channel="sms", error="sms: Twilio 400 error 21211")
    email = Scripted("email", [ChannelError("SMTP 550", permanent=True)])
    outcome = await one_try(cmd, history, keyring, clock, email)
    assert outcome == Abandoned("email: SMTP 550", History(5, 2, 1, "email", "email: SMTP 550"))


async def test_the_last_route_unusable_abandons(keyring: Keyring, clock: FakeClock) -> None:
    cmd = command(keyring, clock, routes=("sms",))
    outcome = await one_try(cmd, History(), keyring, clock)
    assert outcome == Abandoned(
        "sms: no such channel configured",
        History(0, 0, 0, "sms", "sms: no such channel configured"),
    )


@pytest.mark.parametrize("history", [History(), History(3, 1, 1, "whatsapp", "whatsapp: x")])
async def test_an_expired_code_is_abandoned_unsent(
    keyring: Keyring, clock: FakeClock, history: History
) -> None:
    cmd = command(keyring, clock, ttl=timedelta(seconds=30))
    clock.advance(30)
    whatsapp, sms = Scripted("whatsapp"), Scripted("sms")
    outcome = await one_try(cmd, history, keyring, clock, whatsapp, sms)
    assert outcome == Abandoned(EXPIRED, history)
    assert whatsapp.tries == sms.tries == []


async def test_a_whole_history_walked_one_decision_at_a_time(
    keyring: Keyring, clock: FakeClock
) -> None:
    """whatsapp busy three times, sms refusing, email taking it: the outcomes in order, each
    history handed to the next decision as the courier does."""
    channels = (
        Scripted("whatsapp", [BUSY, BUSY, BUSY]),
        Scripted("sms", [REFUSED]),
        Scripted("email"),
    )
    cmd = command(keyring, clock)
    history, seen = History(), []
    while True:
        outcome = await one_try(cmd, history, keyring, clock, *channels)
        seen.append(type(outcome).__name__)
        if isinstance(outcome, Sent | Abandoned):
            break
        history = outcome.history
    assert seen == ["RetryLater", "RetryLater", "FallBack", "FallBack", "Sent"]
    assert outcome == Sent(
        "email", History(5, 2, 0, "sms", "sms: Twilio 400 error 21211")
    )  # the failure that led here stays in the history


@pytest.mark.parametrize("raw", [b"garbage", b"{}", b'{"id": "m-1", "template": "verify"}'])
def test_a_command_that_cannot_be_opened_is_unreadable(keyring: Keyring, raw: bytes) -> None:
    with pytest.raises(Unreadable) as caught:
        parse(raw, keyring)
    assert str(caught.value).startswith("malformed command: ")
