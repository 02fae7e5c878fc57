"""The registration flow on test doubles: register, verify, resend, and what failures leave."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from gatehouse.domain import events
from gatehouse.domain.codes import looks_like_code
from gatehouse.domain.users import NO_PASSWORD
from gatehouse.errors import DecryptionError, InvalidCode, InvalidInput, Unavailable
from gatehouse.security.memory import MemoryCodeStore
from gatehouse.selfservice.context import PHONE_CONTEXT, FlowContext, Policy
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.registration import flow as registration
from tests.fakes import MemoryDatabase

from .helpers import (
    FakeClock,
    FaultyUow,
    code_in,
    deliveries,
    last_code,
    other_code,
    outbox_messages,
    user_events,
)

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"


async def register(ctx: FlowContext, email: str = EMAIL, **extra: str) -> registration.Accepted:
    return await registration.register(
        ctx, name=extra.pop("name", "Ada"), email=email, password=PASSWORD, **extra
    )


class SpyCodes(MemoryCodeStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[str, str]] = []

    async def put(
        self, purpose: str, subject: str, code_hash: str, ttl_seconds: int, attempts: int
    ) -> None:
        self.puts.append((purpose, subject))
        await super().put(purpose, subject, code_hash, ttl_seconds, attempts)


class TestRegister:
    async def test_answer(self, ctx: FlowContext) -> None:
        accepted = await register(ctx, email="  Ada@Example.COM ")
        assert accepted.email == EMAIL
        assert accepted.expires_in == int(ctx.policy.code_ttl.total_seconds()) == 600

    async def test_keeps_a_pending_registration_not_a_user(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        await register(ctx)
        assert db.tables.users == {}
        pending = db.tables.pending[EMAIL]
        assert pending.name == "Ada"
        assert pending.password_hash.startswith("$argon2id$")
        assert PASSWORD not in pending.password_hash
        assert (await ctx.hasher.verify(pending.password_hash, PASSWORD))[0]
        assert pending.created_at == clock.now
        assert pending.expires_at == clock.now + ctx.policy.pending_ttl

    async def test_queues_an_encrypted_code_for_the_courier(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        await register(ctx)
        pending = db.tables.pending[EMAIL]
        [command] = deliveries(db)
        payload = command.payload
        assert command.topic == events.SEND_OTP
        assert command.key == pending.id
        assert payload["channel"] == "email"
        assert payload["template"] == "verify-email"
        assert payload["to"] == EMAIL
        assert payload["id"] == command.id
        assert payload["expires_at"].endswith("Z")
        assert payload["expires_at"].startswith((clock.now + ctx.policy.code_ttl).isoformat()[:19])
        code = code_in(ctx.keyring, payload)
        assert looks_like_code(code)
        # The code is nowhere in plaintext: not in the command, not in any other outbox row.
        for message in outbox_messages(db):
            assert code not in json.dumps(message.payload)
        assert code not in repr(db.tables.pending)

    async def test_code_ciphertext_is_bound_to_its_message(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        payload = deliveries(db)[0].payload
        with pytest.raises(DecryptionError):
            ctx.keyring.decrypt(payload["code_ciphertext"], events.code_context("another-id"))

    async def test_emits_registered_keyed_by_the_pending_id(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        pending = db.tables.pending[EMAIL]
        [event] = user_events(db)
        assert event.key == pending.id
        assert event.payload["type"] == events.REGISTERED
        assert event.payload["subject"] == pending.id
        assert event.payload["data"]["user_id"] == pending.id
        assert event.payload["specversion"] == "1.0"
        assert "password" not in json.dumps(event.payload).lower()

    async def test_phone_is_encrypted_and_indexed(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx, phone="+1 (415) 555-0123")
        pending = db.tables.pending[EMAIL]
        assert pending.phone_ciphertext is not None
        assert "4155550123" not in pending.phone_ciphertext
        assert ctx.keyring.decrypt(pending.phone_ciphertext, PHONE_CONTEXT) == "+14155550123"
        assert pending.phone_index == ctx.blind_index("phone", "+14155550123")

    @pytest.mark.parametrize(
        ("field", "kwargs"),
        [
            ("password", {"password": "short"}),
            ("name", {"name": "Ada\r\nBcc: x@example.com"}),
            ("name", {"name": "   "}),
            ("phone", {"phone": "12345"}),
        ],
    )
    async def test_invalid_fields_write_nothing(
        self, ctx: FlowContext, db: MemoryDatabase, field: str, kwargs: dict[str, str]
    ) -> None:
        args = {"name": "Ada", "email": EMAIL, "password": PASSWORD, **kwargs}
        with pytest.raises(InvalidInput) as caught:
            await registration.register(ctx, **args)
        assert [e["field"] for e in caught.value.errors] == [field]
        assert outbox_messages(db) == []
        assert db.tables.pending == {}

    async def test_registering_again_while_pending_contests_it_and_sends_a_fresh_code(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        first = db.tables.pending[EMAIL]
        first_code = last_code(db, ctx.keyring, EMAIL)
        again = await registration.register(
            ctx, name="Mallory", email=EMAIL, password="another password 123", phone="+14155550123"
        )
        assert again == registration.Accepted(EMAIL, 600)
        # Another password: the sign-up is contested (tests/unit/test_takeover.py). Its id and
        # expiry stay; neither sign-up's password, phone or name does.
        contested = db.tables.pending[EMAIL]
        assert (contested.id, contested.expires_at) == (first.id, first.expires_at)
        assert (contested.password_hash, contested.phone_index) == (NO_PASSWORD, None)
        second_code = last_code(db, ctx.keyring, EMAIL)
        assert deliveries(db)[-1].key == first.id
        assert len(user_events(db, events.REGISTERED)) == 1
        if second_code != first_code:  # one in a million they coincide
            with pytest.raises(InvalidCode):
                await registration.verify(ctx, email=EMAIL, otp=first_code)
        user = await registration.verify(ctx, email=EMAIL, otp=second_code)
        assert (user["id"], user["name"]) == (first.id, "ada")
        assert db.tables.users[first.id].password_hash == NO_PASSWORD


class TestExistingAccount:
    async def test_same_answer_and_a_warning_instead_of_a_code(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        new_answer = await register(ctx)
        await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        user_before = next(iter(db.tables.users.values()))
        spy = SpyCodes()
        spy_ctx = replace(ctx, codes=spy)
        rows_before = len(outbox_messages(db))

        again = await registration.register(
            spy_ctx, name="Mallory", email="ADA@example.com", password="another password"
        )

        assert again == new_answer
        new_rows = outbox_messages(db)[rows_before:]
        assert [m.topic for m in new_rows] == [events.SEND_OTP]
        notice = new_rows[0].payload
        assert notice["template"] == "account-exists"
        assert notice["to"] == EMAIL
        assert notice["code_ciphertext"] is None
        assert spy.puts == []  # no new code
        assert db.tables.pending == {}
        assert next(iter(db.tables.users.values())) == user_before  # untouched
        assert len(user_events(db, events.REGISTERED)) == 1  # only the first registration


class TestVerify:
    async def test_creates_the_user_with_the_pending_id(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        await register(ctx, phone="+14155550123")
        pending = db.tables.pending[EMAIL]
        clock.advance(30)

        view = await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))

        assert view["id"] == pending.id
        assert view["email"] == EMAIL
        assert view["email_verified"] is True
        assert view["phone"] == "+1415\u2022\u2022\u20220123"  # masked: only the profile reveals it
        assert "password_hash" not in view
        user = db.tables.users[pending.id]
        assert user.email_verified_at == clock.now
        assert user.password_hash == pending.password_hash
        assert db.tables.pending == {}
        [verified] = user_events(db, events.VERIFIED)
        assert verified.key == pending.id
        assert verified.payload["subject"] == pending.id

    async def test_the_new_user_can_log_in(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        await register(ctx)
        await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        assert opened.user["email"] == EMAIL

    async def test_email_is_case_insensitive(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        await register(ctx, email="Ada@Example.com")
        code = last_code(db, ctx.keyring, EMAIL)
        view = await registration.verify(ctx, email=" ADA@EXAMPLE.COM", otp=f" {code} ")
        assert view["email"] == EMAIL

    async def test_wrong_code(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email=EMAIL, otp=other_code(code))
        assert db.tables.users == {}
        assert user_events(db, events.VERIFIED) == []
        # A wrong try does not spend the code itself.
        assert (await registration.verify(ctx, email=EMAIL, otp=code))["email"] == EMAIL

    @pytest.mark.parametrize("otp", ["", "12345", "abcdef", "1234567", "１２３４５６"])
    async def test_malformed_code(self, ctx: FlowContext, otp: str) -> None:
        await register(ctx)
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email=EMAIL, otp=otp)

    async def test_four_wrong_tries_leave_the_code_alive(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        for offset in range(1, ctx.policy.code_attempts):
            with pytest.raises(InvalidCode):
                await registration.verify(ctx, email=EMAIL, otp=other_code(code, offset))
        assert (await registration.verify(ctx, email=EMAIL, otp=code))["email"] == EMAIL

    async def test_five_wrong_tries_kill_the_code(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        assert ctx.policy.code_attempts == 5
        for offset in range(1, 6):
            with pytest.raises(InvalidCode):
                await registration.verify(ctx, email=EMAIL, otp=other_code(code, offset))
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email=EMAIL, otp=code)
        assert db.tables.users == {}

    async def test_code_for_another_email_does_not_work(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        await register(ctx, email="bob@example.com")
        ada_code = last_code(db, ctx.keyring, EMAIL)
        bob_code = last_code(db, ctx.keyring, "bob@example.com")
        if ada_code != bob_code:
            with pytest.raises(InvalidCode):
                await registration.verify(ctx, email="bob@example.com", otp=ada_code)
        assert (await registration.verify(ctx, email=EMAIL, otp=ada_code))["email"] == EMAIL

    async def test_code_is_alive_just_before_its_ttl(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        await register(ctx)
        clock.advance(ctx.policy.code_ttl.total_seconds() - 1)
        view = await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        assert view["email"] == EMAIL

    async def test_expired_code(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        await register(ctx)
        clock.advance(ctx.policy.code_ttl.total_seconds() + 1)
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        assert db.tables.users == {}

    async def test_expired_pending_registration(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        short = replace(ctx, policy=Policy(pending_ttl=timedelta(minutes=1)))
        await register(short)
        clock.advance(120)  # the code (10 min) is still alive, the registration is not
        with pytest.raises(InvalidCode):
            await registration.verify(short, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        assert db.tables.users == {}

    async def test_single_use(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        await registration.verify(ctx, email=EMAIL, otp=code)
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email=EMAIL, otp=code)
        assert len(db.tables.users) == 1
        assert len(user_events(db, events.VERIFIED)) == 1

    async def test_unknown_email(self, ctx: FlowContext) -> None:
        with pytest.raises(InvalidCode):
            await registration.verify(ctx, email="nobody@example.com", otp="123456")


class TestResend:
    async def test_sends_a_new_code_that_replaces_the_old_one(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        first = last_code(db, ctx.keyring, EMAIL)
        rows_before = len(outbox_messages(db))
        accepted = await registration.resend(ctx, email="Ada@Example.com")
        assert accepted == registration.Accepted(EMAIL, 600)
        new_rows = outbox_messages(db)[rows_before:]
        assert [m.payload["template"] for m in new_rows] == ["verify-email"]
        assert new_rows[0].key == db.tables.pending[EMAIL].id
        second = code_in(ctx.keyring, new_rows[0].payload)
        assert looks_like_code(second)
        if first != second:
            with pytest.raises(InvalidCode):
                await registration.verify(ctx, email=EMAIL, otp=first)
        assert (await registration.verify(ctx, email=EMAIL, otp=second))["email"] == EMAIL

    async def test_same_answer_and_nothing_sent_for_unknown_verified_or_expired(
        self, ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
    ) -> None:
        unknown = await registration.resend(ctx, email="nobody@example.com")
        assert unknown == registration.Accepted("nobody@example.com", 600)
        assert outbox_messages(db) == []

        await register(ctx)
        await registration.verify(ctx, email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL))
        rows = len(outbox_messages(db))
        assert await registration.resend(ctx, email=EMAIL) == registration.Accepted(EMAIL, 600)
        assert len(outbox_messages(db)) == rows

        await register(ctx, email="late@example.com")
        rows = len(outbox_messages(db))
        clock.advance(ctx.policy.pending_ttl.total_seconds() + 1)
        await registration.resend(ctx, email="late@example.com")
        assert len(outbox_messages(db)) == rows


class TestFailures:
    @pytest.mark.parametrize("step", ["outbox.add", "commit"])
    async def test_failed_register_leaves_nothing(
        self, ctx: FlowContext, db: MemoryDatabase, step: str
    ) -> None:
        faulty = FaultyUow(db.uow, fail_at=step, error=lambda: RuntimeError("disk full"))
        with pytest.raises(RuntimeError, match="disk full"):
            await register(replace(ctx, uow=faulty))
        assert faulty.failures == 1
        assert db.tables.pending == {}
        assert outbox_messages(db) == []
        assert db.tables.users == {}

    async def test_failed_verify_leaves_the_pending_registration(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        rows = len(outbox_messages(db))
        faulty = FaultyUow(db.uow, fail_at="commit")
        with pytest.raises(Unavailable):
            await registration.verify(
                replace(ctx, uow=faulty), email=EMAIL, otp=last_code(db, ctx.keyring, EMAIL)
            )
        assert db.tables.users == {}
        assert EMAIL in db.tables.pending
        assert len(outbox_messages(db)) == rows

    @pytest.mark.parametrize("step", ["enter", "commit"])
    async def test_code_is_restored_when_the_database_fails_after_it_was_consumed(
        self, ctx: FlowContext, db: MemoryDatabase, step: str
    ) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        flaky = replace(ctx, uow=FaultyUow(db.uow, fail_at=step, times=1))
        with pytest.raises(Unavailable):
            await registration.verify(flaky, email=EMAIL, otp=code)
        assert db.tables.users == {}
        view = await registration.verify(flaky, email=EMAIL, otp=code)
        assert view["email"] == EMAIL
        assert len(db.tables.users) == 1

    async def test_restored_code_keeps_its_limits(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await register(ctx)
        code = last_code(db, ctx.keyring, EMAIL)
        flaky = replace(ctx, uow=FaultyUow(db.uow, fail_at="enter", times=1))
        with pytest.raises(Unavailable):
            await registration.verify(flaky, email=EMAIL, otp=code)
        for offset in range(1, 6):
            with pytest.raises(InvalidCode):
                await registration.verify(flaky, email=EMAIL, otp=other_code(code, offset))
        with pytest.raises(InvalidCode):
            await registration.verify(flaky, email=EMAIL, otp=code)


async def test_mail_to_an_address_without_a_sign_up_is_keyed_by_an_hmac_not_the_address(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    # A sign-up code asked through the `verification` queue, then (once the account exists) the
    # account-exists notice: neither the Kafka key nor anything but the mail's own `to` holds
    # the address, since the courier's delivery events take that key as their subject.
    await registration.send_signup_code(ctx, email=EMAIL)
    other = "grace@example.com"
    await registration.register(ctx, name="Grace", email=other, password=PASSWORD)
    await registration.verify(ctx, email=other, otp=last_code(db, ctx.keyring, other))
    await registration.send_signup_code(ctx, email=other)
    sent = [m for m in deliveries(db) if m.payload["to"] in (EMAIL, other)]
    assert [m.payload["template"] for m in sent] == [
        "verify-email",
        "verify-email",
        "account-exists",
    ]
    for message in (sent[0], sent[2]):
        assert EMAIL not in message.key and other not in message.key
        assert message.key == ctx.blind_index("recipient", message.payload["to"])
