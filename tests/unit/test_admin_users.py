"""User administration's use cases (admin/users.py) on the unit suite's fakes: a disabled account
is refused everywhere a sign-in happens (password, second step, passkey, refresh, recovery) with
the answer a wrong credential gets, its sessions, tokens and sockets end at once, and every
action is an event and an audit record naming the operator; the search pages by email prefix
and finds a phone through its blind index; one account is shown without a secret."""

from __future__ import annotations

import json

import pytest

from gatehouse.admin import users as admin
from gatehouse.domain import events
from gatehouse.errors import InvalidCode, InvalidCredentials, InvalidInput, InvalidToken, NotFound
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.passkeys import flow as passkeys
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.sessions import rotation as session
from gatehouse.selfservice.sessions.flow import Session
from tests.fakes import MemoryDatabase, MemoryNotifier
from tests.fakes_audit import MemoryUserDirectory
from tests.softauthn import SoftAuthenticator

from .helpers import FakeClock, deliveries, user_events
from .test_flows_session import PASSWORD, make_account
from .test_mfa import PASSWORD as MFA_PASSWORD
from .test_mfa import code_at, enrolled
from .test_passkeys import enrolled as with_passkey
from .test_passkeys import passwordless

OPERATOR = "cli:root"


async def signed_in(ctx: FlowContext, email: str) -> Session:
    opened = await login_flow.login(ctx, email=email, password=PASSWORD)
    assert isinstance(opened, Session)
    return opened


async def test_disable_ends_everything_at_once_and_every_sign_in_is_refused_alike(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    account = await make_account(ctx, db)
    first, other = await signed_in(ctx, account.email), await signed_in(ctx, account.email)
    notifier = ctx.notifier
    assert isinstance(notifier, MemoryNotifier)
    notifier.sent.clear()

    disabled = await admin.disable(ctx, account.id, OPERATOR)
    assert disabled["disabled"] and disabled["disabled_at"]
    assert all(s.revoked_at is not None for s in db.tables.sessions.values())
    assert all(t.revoked_at is not None for t in db.tables.tokens.values())
    assert list(notifier.sent) == [
        (f"user:{account.id}", "session.revoked", {"reason": admin.DISABLED})
    ]
    assert user_events(db, events.DISABLED)[-1].payload["data"] == {
        "user_id": account.id,
        "by": "admin",
    }
    revoked = user_events(db, events.SESSION_REVOKED)[-1].payload["data"]
    assert revoked["reason"] == admin.DISABLED

    with pytest.raises(InvalidToken):
        await profile.read(ctx, token=first.token)
    for opened in (first, other):
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
    # The right password is refused with the wrong password's very answer.
    with pytest.raises(InvalidCredentials) as right:
        await login_flow.login(ctx, email=account.email, password=PASSWORD)
    with pytest.raises(InvalidCredentials) as wrong:
        await login_flow.login(ctx, email="nobody@example.com", password=PASSWORD)
    assert (right.value.code, right.value.message) == (wrong.value.code, wrong.value.message)
    # Recovery sends nothing and a reset is a wrong code.
    mails = len(deliveries(db, "password-reset"))
    await recovery.request(ctx, email=account.email)
    assert len(deliveries(db, "password-reset")) == mails
    with pytest.raises(InvalidCode):
        await recovery.reset(ctx, email=account.email, otp="123456", new_password="x" * 12)

    actions = [(r.action, r.outcome, r.actor, r.actor_id, r.detail) for r in db.tables.audit]
    assert ("user.disable", "success", "admin", OPERATOR, None) in actions
    assert actions[-2:] == [
        ("login", "failure", "user", account.id, "disabled"),
        ("login", "failure", "user", None, "unknown_account"),
    ]

    # Disabling twice changes nothing more; enabling lets the password in again.
    await admin.disable(ctx, account.id, OPERATOR)
    assert len(user_events(db, events.DISABLED)) == 1
    enabled = await admin.enable(ctx, account.id, OPERATOR)
    assert not enabled["disabled"]
    assert user_events(db, events.ENABLED)[-1].payload["data"]["by"] == "admin"
    await signed_in(ctx, account.email)
    with pytest.raises(InvalidToken):  # the sessions ended stay ended
        await session.refresh(ctx, refresh_token=first.refresh_token)


async def test_a_second_step_and_a_passkey_of_a_disabled_account_are_refused(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened, secret, _codes = await enrolled(ctx, db, clock)
    user_id = opened.user["id"]
    device = SoftAuthenticator()
    await with_passkey(ctx, opened.token, device)
    challenge = await login_flow.login(ctx, email=opened.user["email"], password=MFA_PASSWORD)
    assert isinstance(challenge, second.MfaChallenge)
    await admin.disable(ctx, user_id, OPERATOR)
    clock.advance(30)
    with pytest.raises(InvalidToken):
        await second.finish(ctx, mfa_token=challenge.mfa_token, code=code_at(secret, clock.now))
    with pytest.raises(InvalidCredentials) as refused:
        await passwordless(ctx, device)
    assert refused.value.message == passkeys.REFUSED
    details = [(r.action, r.detail) for r in db.tables.audit if r.outcome == "failure"]
    assert details[-2:] == [("login.mfa", "disabled"), ("login", "disabled")]
    await admin.enable(ctx, user_id, OPERATOR)
    assert isinstance(await passwordless(ctx, device), Session)


async def test_revoke_and_delete_through_the_operator(ctx: FlowContext, db: MemoryDatabase) -> None:
    account = await make_account(ctx, db, phone="+14155550123")
    opened = await signed_in(ctx, account.email)
    assert await admin.revoke_sessions(ctx, account.id, OPERATOR) == 1
    with pytest.raises(InvalidToken):
        await session.refresh(ctx, refresh_token=opened.refresh_token)
    await signed_in(ctx, account.email)  # not disabled: the account signs in again
    await admin.delete(ctx, account.id, OPERATOR)
    assert account.id not in db.tables.users
    assert user_events(db, events.DELETED)[-1].payload["data"]["by"] == "admin"
    assert deliveries(db, "security-notice")[-1].payload["to"] == account.email
    with pytest.raises(NotFound):
        await admin.show(ctx, account.id)
    with pytest.raises(NotFound):
        await admin.disable(ctx, account.id, OPERATOR)
    actions = [r.action for r in db.tables.audit if r.actor == "admin"]
    assert actions == ["user.sessions.revoke", "user.delete"]


async def test_find_pages_by_email_prefix_and_finds_a_phone_exactly(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    for n in range(5):
        await make_account(ctx, db, email=f"team{n}@example.com")
    await make_account(ctx, db, email="other@example.com", phone="+14155550199")
    directory = MemoryUserDirectory(db)
    first = await admin.find(ctx, directory, "TEAM", None, 2)
    assert [u["email"] for u in first.items] == ["team0@example.com", "team1@example.com"]
    seen = [u["email"] for u in first.items]
    cursor = first.next_cursor
    while cursor:
        page = await admin.find(ctx, directory, "team", cursor, 2)
        seen += [u["email"] for u in page.items]
        cursor = page.next_cursor
    assert seen == [f"team{n}@example.com" for n in range(5)]
    found = await admin.find(ctx, directory, "+1 415 555 0199", None, 10)
    assert [(u["email"], u["phone"]) for u in found.items] == [
        ("other@example.com", "+1415\u2022\u2022\u20220199")
    ]
    assert found.next_cursor is None
    assert (await admin.find(ctx, directory, "+14155550100", None, 10)).items == []
    by_id = await admin.find(ctx, directory, found.items[0]["id"], None, 10)
    assert by_id.items == found.items
    with pytest.raises(InvalidInput):
        await admin.find(ctx, directory, "team", "not a cursor!", 2)
    with pytest.raises(InvalidInput):
        await admin.find(ctx, directory, "team", None, 0)


async def test_show_gives_sessions_and_factors_never_secrets(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened, secret, codes = await enrolled(ctx, db, clock)
    device = SoftAuthenticator()
    await with_passkey(ctx, opened.token, device, name="Laptop")
    shown = await admin.show(ctx, opened.user["id"])
    assert [s["aal"] for s in shown["sessions"]] == [1]
    factors = shown["second_factors"]
    assert factors["totp"] is True and factors["recovery_codes_left"] == len(codes)
    assert [p["name"] for p in factors["passkeys"]] == ["Laptop"]
    assert set(factors["passkeys"][0]) == {"id", "name", "created_at", "last_used_at"}
    text = json.dumps(shown)
    stored = db.tables.users[opened.user["id"]]
    for secret_value in (secret, *codes, stored.password_hash, opened.token):
        assert secret_value not in text
    assert "password_hash" not in text and "phone_ciphertext" not in text
