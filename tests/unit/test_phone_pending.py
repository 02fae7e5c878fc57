"""A new phone is pending until proven (issue 12, class 2; DESIGN 3a), on the test doubles: the
code goes to the new number only, the account's phone changes only with it, a number another
account holds is answered alike and never confirmed, and SMS recovery keeps to the proven phone.
Also the security notices of the profile flows (phone, password, deletion), written in the
change's transaction and pushed before the sockets close."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.users import mask_phone
from gatehouse.errors import InvalidCode, RateLimited, Unavailable
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.notices import WHAT
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile import phone as phone_flow
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.sessions.flow import Session
from tests.fakes import MemoryDatabase, MemoryNotifier, MemoryUsers

from .helpers import FaultyUow, code_in, deliveries, other_code, outbox_messages, user_events
from .test_flows_profile_recovery import PASSWORD, signed_up

OLD = "+14155550123"  # the account's proven phone
NEW = "+447700900123"  # the number asked for (the thief's, in issue 12's story)
FREE = "+447700900456"


def phone_code(ctx: FlowContext, db: MemoryDatabase) -> str:
    sent = deliveries(db, "verify-phone")
    assert sent, "no phone code queued"
    return code_in(ctx.keyring, sent[-1].payload)


async def asked(ctx: FlowContext, db: MemoryDatabase) -> tuple[Session, str]:
    """An account whose proven phone is OLD, NEW asked for: its session and NEW's code."""
    opened = await signed_up(ctx, db, phone=OLD)
    await profile.update(ctx, token=opened.token, phone=NEW)
    return opened, phone_code(ctx, db)


def recipient(ctx: FlowContext, payload: dict[str, Any]) -> str:
    """The number a phone delivery goes to, opened as the courier opens it."""
    return ctx.keyring.decrypt(payload["to_ciphertext"], events.recipient_context(payload["id"]))


def notices(db: MemoryDatabase) -> list[dict[str, Any]]:
    return [m.payload for m in deliveries(db, "security-notice")]


def pushed(ctx: FlowContext, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    assert isinstance(ctx.notifier, MemoryNotifier)
    return [(event, p) for room, event, p in ctx.notifier.sent if room == f"user:{user_id}"]


async def test_a_new_phone_is_pending_and_its_code_goes_to_the_new_number_alone(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened = await signed_up(ctx, db, phone=OLD)
    updated = await profile.update(ctx, token=opened.token, phone=NEW, name="Ada L")
    assert (updated.user["name"], updated.user["phone"]) == ("Ada L", OLD)  # name at once
    assert updated.as_data() == {
        "user": updated.user,
        "phone_pending": mask_phone(NEW),
        "expires_in": 600,
    }
    assert (await profile.read(ctx, token=opened.token))["phone"] == OLD
    row = db.tables.users[opened.user["id"]]
    assert row.phone_index == ctx.blind_index("phone", OLD)
    assert row.pending_phone_ciphertext and "7700900123" not in row.pending_phone_ciphertext
    [command] = [m.payload for m in deliveries(db, "verify-phone")]
    assert (command["channel"], command["to"], command["fallbacks"]) == ("sms", mask_phone(NEW), [])
    assert recipient(ctx, command) == NEW and "7700900123" not in str(command)
    # What the courier sends: the code, in the SMS text.
    _subject, text = Templates().render(
        "verify-phone", command["variables"] | {"code": phone_code(ctx, db)}, short=True
    )
    assert phone_code(ctx, db) in text and "10 minutes" in text
    assert user_events(db, events.UPDATED)[-1].payload["data"]["fields"] == ["name"]


async def test_the_code_makes_it_the_phone_with_its_event_and_the_owners_notice(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened, code = await asked(ctx, db)
    user_id = opened.user["id"]
    view = await phone_flow.verify(ctx, token=opened.token, otp=code)
    assert view["phone"] == NEW == (await profile.read(ctx, token=opened.token))["phone"]
    row = db.tables.users[user_id]
    assert row.phone_index == ctx.blind_index("phone", NEW)
    assert (row.pending_phone_ciphertext, row.pending_phone_index) == (None, None)
    [event] = user_events(db, events.PHONE_VERIFIED)
    assert event.payload["data"] == {"user_id": user_id}
    [mail] = notices(db)
    assert (mail["channel"], mail["to"]) == ("email", "ada@example.com")
    assert mail["variables"]["what"] == WHAT["phone_changed"]
    assert [p["type"] for e, p in pushed(ctx, user_id) if e == "security.notice"] == [
        "phone_changed"
    ]
    assert "7700900123" not in str([m.payload for m in outbox_messages(db)])  # only ever sealed
    with pytest.raises(InvalidCode):  # single use
        await phone_flow.verify(ctx, token=opened.token, otp=code)


async def test_the_phone_its_event_and_its_notice_commit_together_or_not_at_all(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened, code = await asked(ctx, db)
    flaky = dataclasses.replace(ctx, uow=FaultyUow(db.uow, fail_at="commit"))
    with pytest.raises(Unavailable):
        await phone_flow.verify(flaky, token=opened.token, otp=code)
    assert db.tables.users[opened.user["id"]].phone_index == ctx.blind_index("phone", OLD)
    assert (user_events(db, events.PHONE_VERIFIED), notices(db)) == ([], [])
    # The code was put back: the owner simply tries again.
    assert (await phone_flow.verify(flaky, token=opened.token, otp=code))["phone"] == NEW
    assert (len(user_events(db, events.PHONE_VERIFIED)), len(notices(db))) == (1, 1)


async def test_a_taken_number_is_answered_as_a_free_one_and_never_confirmed(
    ctx: FlowContext, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await signed_up(ctx, db, "owner@example.com", phone=NEW)
    thief = await signed_up(ctx, db, "thief@example.com", phone=None)
    other = await signed_up(ctx, db, "other@example.com", phone=None)
    # Even a right guess of the never-sent code cannot take it: fix the code the taken number gets.
    monkeypatch.setattr(phone_flow, "generate_code", lambda: "123456")
    taken = await profile.update(ctx, token=thief.token, phone=NEW)  # before: 409 Conflict
    free = await profile.update(ctx, token=other.token, phone=FREE)
    assert (taken.user["phone"], free.user["phone"]) == (None, None)
    assert set(taken.as_data()) == set(free.as_data())
    assert (taken.pending, free.pending) == (
        phone_flow.Pending(mask_phone(NEW), 600),
        phone_flow.Pending(mask_phone(FREE), 600),
    )
    assert [recipient(ctx, m.payload) for m in deliveries(db, "verify-phone")] == [FREE]
    refusals = []
    for token, otp in ((thief.token, "123456"), (other.token, other_code(phone_code(ctx, db)))):
        with pytest.raises(InvalidCode) as refused:
            await phone_flow.verify(ctx, token=token, otp=otp)
        refusals.append((refused.value.code, refused.value.message))
    assert refusals[0] == refusals[1]
    owner = await db.uow().users.get_by_phone_index(ctx.blind_index("phone", NEW))
    assert owner is not None and owner.email == "owner@example.com"
    assert db.tables.users[thief.user["id"]].phone_index is None


async def test_a_number_taken_meanwhile_is_refused_as_a_wrong_code_and_nothing_is_written(
    ctx: FlowContext, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await signed_up(ctx, db, "first@example.com", phone=None)
    second = await signed_up(ctx, db, "second@example.com", phone=OLD)
    await profile.update(ctx, token=first.token, phone=NEW)
    first_code = phone_code(ctx, db)
    await profile.update(ctx, token=second.token, phone=NEW)  # free for both, so far
    second_code = phone_code(ctx, db)
    await phone_flow.verify(ctx, token=first.token, otp=first_code)
    before = db.tables.users[second.user["id"]]
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=second.token, otp=second_code)
    assert db.tables.users[second.user["id"]] == before
    # The same when only the unique index sees it (a commit between the lookup and the write).
    third = await signed_up(ctx, db, "third@example.com", phone=None)
    await profile.update(ctx, token=third.token, phone=NEW)
    code = phone_code(ctx, db)
    before = db.tables.users[third.user["id"]]

    async def missed(self: MemoryUsers, phone_index: str) -> None:
        return None

    monkeypatch.setattr(MemoryUsers, "get_by_phone_index", missed)
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=third.token, otp=code)
    assert db.tables.users[third.user["id"]] == before
    assert len(user_events(db, events.PHONE_VERIFIED)) == len(notices(db)) == 1


async def test_five_wrong_codes_kill_the_code_and_a_new_one_buys_no_more_tries(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened = await signed_up(ctx, db, "owner@example.com", phone=OLD)
    await profile.update(ctx, token=opened.token, phone=NEW)
    code = phone_code(ctx, db)
    for n in range(1, 6):
        with pytest.raises(InvalidCode):
            await phone_flow.verify(ctx, token=opened.token, otp=other_code(code, n))
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=opened.token, otp=code)
    assert db.tables.users[opened.user["id"]].phone_index == ctx.blind_index("phone", OLD)
    # A free number and a taken one (OLD is this account's own, so take another's) alike.
    await signed_up(ctx, db, "holder@example.com", phone=FREE)
    for number in (NEW, FREE):
        with pytest.raises(RateLimited) as refused:
            await profile.update(ctx, token=opened.token, phone=number)
        assert refused.value.message == "Too many wrong codes; try again later"


async def test_a_second_change_replaces_the_first_and_its_code(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened = await signed_up(ctx, db, "owner@example.com", phone=OLD)
    await signed_up(ctx, db, "holder@example.com", phone=FREE)
    await profile.update(ctx, token=opened.token, phone=NEW)
    first = phone_code(ctx, db)
    await profile.update(ctx, token=opened.token, phone=FREE)  # taken: nothing sent
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=opened.token, otp=first)
    await profile.update(ctx, token=opened.token, phone="+447700900789")
    second = phone_code(ctx, db)
    await profile.update(ctx, token=opened.token, phone=NEW)
    third = phone_code(ctx, db)
    if second != third:  # one chance in a million they are the same six digits
        with pytest.raises(InvalidCode):
            await phone_flow.verify(ctx, token=opened.token, otp=second)
    assert (await phone_flow.verify(ctx, token=opened.token, otp=third))["phone"] == NEW


async def test_a_code_confirms_only_the_number_and_the_account_it_was_sent_for(
    ctx: FlowContext, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gatehouse.selfservice import otp

    monkeypatch.setattr(otp, "generate_code", lambda: "424242")  # every code the same digits
    mine = await signed_up(ctx, db, "mine@example.com", phone=None)
    theirs = await signed_up(ctx, db, "theirs@example.com", phone=None)
    await profile.update(ctx, token=mine.token, phone=NEW)
    with pytest.raises(InvalidCode):  # my code is not theirs
        await phone_flow.verify(ctx, token=theirs.token, otp="424242")
    # A change to FREE whose commit failed: its code was issued (the code store is no part of
    # the transaction), but NEW is still the number pending. FREE's code must not confirm NEW.
    flaky = dataclasses.replace(ctx, uow=FaultyUow(db.uow, fail_at="commit"))
    with pytest.raises(Unavailable):
        await profile.update(flaky, token=mine.token, phone=FREE)
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=mine.token, otp="424242")
    assert db.tables.users[mine.user["id"]].phone_index is None


async def test_sms_recovery_keeps_to_the_proven_phone_until_the_new_one_is_confirmed(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened, phone_otp = await asked(ctx, db)  # the one code the holder of NEW reads
    assert await recovery.request(ctx, phone=NEW, channel="sms") == 600
    assert deliveries(db, "password-reset") == []  # NEW is no account's phone yet
    with pytest.raises(InvalidCode):
        await recovery.reset(ctx, phone=NEW, otp=phone_otp, new_password="a thief's password")
    with pytest.raises(InvalidCode):  # a phone code is no reset code, whatever the account
        await recovery.reset(
            ctx, email="ada@example.com", otp=phone_otp, new_password="a thief's password"
        )
    await recovery.request(ctx, phone=OLD, channel="sms")
    assert recipient(ctx, deliveries(db, "password-reset")[-1].payload) == OLD
    await phone_flow.verify(ctx, token=opened.token, otp=phone_otp)
    await recovery.request(ctx, phone=OLD, channel="sms")
    assert len(deliveries(db, "password-reset")) == 1  # OLD is no account's phone any more
    await recovery.request(ctx, phone=NEW, channel="sms")
    assert recipient(ctx, deliveries(db, "password-reset")[-1].payload) == NEW


async def test_removing_the_phone_is_immediate_and_drops_what_was_pending(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    opened, code = await asked(ctx, db)
    removed = await profile.update(ctx, token=opened.token, phone="")
    assert removed.pending is None and removed.user["phone"] is None
    with pytest.raises(InvalidCode):
        await phone_flow.verify(ctx, token=opened.token, otp=code)
    row = db.tables.users[opened.user["id"]]
    assert (row.phone_index, row.pending_phone_index) == (None, None)
    # A recovery channel gone: the owner is told, by mail and on the open sockets.
    told = [d.payload["variables"]["what"] for d in deliveries(db, "security-notice")]
    assert told[-1] == "The phone number of your account was removed."
    assert isinstance(ctx.notifier, MemoryNotifier)
    pushed = [p["type"] for _room, event, p in ctx.notifier.sent if event == "security.notice"]
    assert pushed[-1] == "phone_removed"


@pytest.mark.parametrize("change", ["password", "deletion"])
async def test_a_password_change_or_deletion_is_told_in_its_transaction_before_sockets_close(
    ctx: FlowContext, db: MemoryDatabase, change: str
) -> None:
    opened = await signed_up(ctx, db, phone=OLD)
    user_id = opened.user["id"]

    async def make(c: FlowContext) -> None:
        if change == "password":
            await profile.update(
                c, token=opened.token, password="a new long passphrase", current_password=PASSWORD
            )
        else:
            await profile.delete(c, token=opened.token, password=PASSWORD)

    flaky = dataclasses.replace(ctx, uow=FaultyUow(db.uow, fail_at="commit"))
    with pytest.raises(Unavailable):
        await make(flaky)
    assert notices(db) == [] and user_id in db.tables.users
    await make(ctx)
    kind = "password_changed" if change == "password" else "account_deleted"
    [mail] = notices(db)
    assert (mail["to"], mail["variables"]["what"]) == ("ada@example.com", WHAT[kind])
    assert "a new long passphrase" not in str(mail)
    heard = [(e, p.get("type") or p.get("reason")) for e, p in pushed(ctx, user_id)]
    assert heard == [("security.notice", kind), ("session.revoked", kind)]
