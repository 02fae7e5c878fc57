"""Sessions as rows, on the test doubles: opened at sign-in, used at refresh, ended by every
revocation, listed and ended by their owner; recent authentication (step-up, reauth) for the
sensitive changes of the profile."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from gatehouse.domain import events
from gatehouse.errors import (
    InvalidCredentials,
    InvalidToken,
    NotFound,
    RateLimited,
    ReauthRequired,
)
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.mfa import proof
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.sessions import manage
from gatehouse.selfservice.sessions import rotation as session
from tests.fakes import MemoryDatabase, MemoryNotifier

from .helpers import FakeClock, code_in, deliveries, user_events
from .test_flows_session import EMAIL, PASSWORD, Account, make_account

STEP_UP = 5 * 60


@pytest.fixture
async def account(ctx: FlowContext, db: MemoryDatabase) -> Account:
    return await make_account(ctx, db)


async def signed_in(ctx: FlowContext, agent: str | None = "Firefox/140") -> session.Session:
    return await login_flow.login(ctx, email=EMAIL, password=PASSWORD, user_agent=agent)


def sid_of(ctx: FlowContext, opened: session.Session, clock: FakeClock) -> str:
    return ctx.tokens.verify(opened.token, clock.now).sid


def pushes(ctx: FlowContext) -> list[tuple[str, str, dict[str, object]]]:
    assert isinstance(ctx.notifier, MemoryNotifier)
    return list(ctx.notifier.sent)


class TestSessionRows:
    async def test_login_opens_a_session_row_and_its_tokens_carry_its_proof(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx, "Firefox\x00/140 " + "x" * 300)
        claims = ctx.tokens.verify(opened.token, clock.now)
        row = db.tables.sessions[claims.sid]
        assert (row.user_id, row.created_at, row.last_used_at, row.auth_time) == (
            account.id,
            clock.now,
            clock.now,
            clock.now,
        )
        assert row.user_agent is not None and row.user_agent.startswith("Firefox/140 x")
        assert len(row.user_agent) == 256
        assert (row.amr, row.aal, row.revoked_at) == (("pwd",), 1, None)
        assert (claims.auth_time, claims.amr, claims.aal) == (clock.now, ("pwd",), 1)

    async def test_refresh_marks_the_session_used_and_keeps_its_auth_time(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        signed_at = clock.now
        clock.advance(600)
        renewed = await session.refresh(ctx, refresh_token=opened.refresh_token)
        claims = ctx.tokens.verify(renewed.token, clock.now)
        row = db.tables.sessions[claims.sid]
        assert (row.last_used_at, row.auth_time) == (clock.now, signed_at)
        assert claims.auth_time == signed_at  # a refresh proves no factor

    async def test_refresh_of_a_session_whose_row_is_revoked_is_refused(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        sid = sid_of(ctx, opened, clock)
        db.tables.sessions[sid] = replace(db.tables.sessions[sid], revoked_at=clock.now)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)

    async def test_logout_revokes_the_row_and_announces_the_session(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened, other = await signed_in(ctx), await signed_in(ctx)
        sid = sid_of(ctx, opened, clock)
        await session.logout(ctx, refresh_token=opened.refresh_token)
        row = db.tables.sessions[sid]
        assert (row.revoked_at, row.revoked_reason) == (clock.now, "logout")
        assert db.tables.sessions[sid_of(ctx, other, clock)].revoked_at is None
        payload = {"session_id": sid, "reason": "logout"}
        assert pushes(ctx)[-2:] == [
            (f"session:{sid}", "session.revoked", payload),
            (f"user:{account.id}", "session.revoked", payload),
        ]
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=opened.token)
        assert (await profile.read(ctx, token=other.token))["id"] == account.id

    async def test_replaying_a_refresh_token_revokes_the_row(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        await session.refresh(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        row = db.tables.sessions[sid_of(ctx, opened, clock)]
        assert row.revoked_reason == "refresh_token_reuse"
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=opened.token)

    @pytest.mark.parametrize(
        "ending", ["logout_everywhere", "password_changed", "password_reset", "account_deleted"]
    )
    async def test_every_revocation_of_all_sessions_revokes_every_row(
        self,
        ctx: FlowContext,
        db: MemoryDatabase,
        account: Account,
        clock: FakeClock,
        ending: str,
    ) -> None:
        one, two = await signed_in(ctx), await signed_in(ctx)
        if ending == "logout_everywhere":
            await session.logout(ctx, refresh_token=one.refresh_token, everywhere=True)
        elif ending == "password_changed":
            await profile.update(
                ctx, token=one.token, password="a new passphrase", current_password=PASSWORD
            )
        elif ending == "password_reset":
            await recovery.request(ctx, email=EMAIL, phone=None, channel="email")
            code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
            await recovery.reset(ctx, otp=code, new_password="a new passphrase", email=EMAIL)
        else:
            await profile.delete(ctx, token=one.token, password=PASSWORD)
        rows = list(db.tables.sessions.values())
        assert len(rows) == 2
        assert {(r.revoked_at, r.revoked_reason) for r in rows} == {(clock.now, ending)}
        for opened in (one, two):
            with pytest.raises(InvalidToken):
                await profile.read(ctx, token=opened.token)


class TestOwnSessions:
    async def test_listed_live_newest_first_with_the_current_one_marked(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        first = await signed_in(ctx, "Old/1")
        clock.advance(60)
        second = await signed_in(ctx, None)
        clock.advance(60)
        ended = await signed_in(ctx)
        await session.logout(ctx, refresh_token=ended.refresh_token)
        user_id, found = await manage.list_sessions(ctx, token=first.token)
        assert user_id == account.id
        assert [s["id"] for s in found] == [sid_of(ctx, second, clock), sid_of(ctx, first, clock)]
        assert [s["current"] for s in found] == [False, True]
        assert found[1] == {
            "id": sid_of(ctx, first, clock),
            "created_at": (clock.now - timedelta(seconds=120)).isoformat(),
            "last_used_at": (clock.now - timedelta(seconds=120)).isoformat(),
            "user_agent": "Old/1",
            "amr": ["pwd"],
            "aal": 1,
            "current": True,
        }

    async def test_sessions_whose_refresh_tokens_expired_are_not_listed(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        await signed_in(ctx)
        clock.advance(ctx.policy.refresh_ttl.total_seconds())
        current = await signed_in(ctx)
        _, found = await manage.list_sessions(ctx, token=current.token)
        assert [s["id"] for s in found] == [sid_of(ctx, current, clock)]

    async def test_ending_one_session_ends_its_tokens_at_once(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        mine, lost = await signed_in(ctx), await signed_in(ctx)
        sid = sid_of(ctx, lost, clock)
        assert await manage.revoke_session(ctx, token=mine.token, session_id=sid) == account.id
        assert db.tables.sessions[sid].revoked_reason == "session_deleted"
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=lost.token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=lost.refresh_token)
        assert (await profile.read(ctx, token=mine.token))["id"] == account.id
        event = user_events(db, events.SESSION_REVOKED)[-1].payload["data"]
        assert (event["reason"], event["session_id"]) == ("session_deleted", sid)
        assert (
            f"session:{sid}",
            "session.revoked",
            {"session_id": sid, "reason": "session_deleted"},
        ) in pushes(ctx)

    async def test_someone_elses_unknown_or_ended_session_is_the_same_not_found(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        mine = await signed_in(ctx)
        await make_account(ctx, db, "bob@example.com")
        bobs = await login_flow.login(ctx, email="bob@example.com", password=PASSWORD)
        ended = await signed_in(ctx)
        await session.logout(ctx, refresh_token=ended.refresh_token)
        refusals = []
        for sid in (sid_of(ctx, bobs, clock), "no-such-session", sid_of(ctx, ended, clock)):
            with pytest.raises(NotFound) as refused:
                await manage.revoke_session(ctx, token=mine.token, session_id=sid)
            refusals.append((refused.value.code, refused.value.message))
        assert len(set(refusals)) == 1
        assert (await profile.read(ctx, token=bobs.token))["email"] == "bob@example.com"


class TestRecentAuthentication:
    async def test_a_phone_change_needs_a_recent_sign_in(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        clock.advance(STEP_UP)
        asked = await profile.update(ctx, token=opened.token, phone="+14155550123")  # at the limit
        assert asked.pending is not None  # pending until its code comes back
        clock.advance(1)
        for phone in ("+14155550199", ""):
            with pytest.raises(ReauthRequired) as refused:
                await profile.update(ctx, token=opened.token, phone=phone)
            assert (refused.value.code, refused.value.message) == (
                "reauth_required",
                ReauthRequired.message,
            )
        assert (await profile.update(ctx, token=opened.token, name="Ada L")).user["name"] == "Ada L"
        # Neither refusal touched the number asked for: it is still pending, the account's is
        # still none.
        assert db.tables.users[account.id].pending_phone_index == ctx.blind_index(
            "phone", "+14155550123"
        )
        assert (await profile.read(ctx, token=opened.token))["phone"] is None

    async def test_the_current_password_is_proof_enough(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        clock.advance(STEP_UP + 1)
        with pytest.raises(InvalidCredentials):
            await profile.update(
                ctx, token=opened.token, phone="+14155550199", current_password="wrong one"
            )
        changed = await profile.update(
            ctx, token=opened.token, phone="+14155550199", current_password=PASSWORD
        )
        assert changed.as_data()["phone_pending"] == "+1415\u2022\u2022\u20220199"

    async def test_deletion_takes_its_password_as_proof(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        clock.advance(600)  # past the step-up window, within the access token's life
        with pytest.raises(InvalidCredentials):
            await profile.delete(ctx, token=opened.token, password="wrong one")
        assert await profile.delete(ctx, token=opened.token, password=PASSWORD) == account.id
        assert db.tables.users == {}

    async def test_reauth_gives_a_new_token_of_the_same_session_proved_now(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        sid = sid_of(ctx, opened, clock)
        clock.advance(STEP_UP + 1)
        answer = await proof.reauth(ctx, token=opened.token, password=PASSWORD)
        assert (answer["token_type"], answer["expires_in"]) == ("Bearer", 15 * 60)
        claims = ctx.tokens.verify(answer["token"], clock.now)
        assert (claims.sub, claims.sid, claims.auth_time) == (account.id, sid, clock.now)
        row = db.tables.sessions[sid]
        assert (row.auth_time, row.last_used_at) == (clock.now, clock.now)
        await profile.update(ctx, token=answer["token"], phone="+14155550199")
        # The old token still says when it was issued: it does not gain from the reauth.
        with pytest.raises(ReauthRequired):
            await profile.update(ctx, token=opened.token, phone="+14155550123")
        # Refreshed tokens carry the session's new auth_time.
        renewed = await session.refresh(ctx, refresh_token=opened.refresh_token)
        assert ctx.tokens.verify(renewed.token, clock.now).auth_time == clock.now

    async def test_wrong_passwords_count_as_failed_sign_ins(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        opened = await signed_in(ctx)
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                await proof.reauth(ctx, token=opened.token, password="wrong one")
        with pytest.raises(RateLimited):
            await proof.reauth(ctx, token=opened.token, password=PASSWORD)
        with pytest.raises(RateLimited):  # the login form meets the same throttle
            await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        clock.advance(61)
        assert (await proof.reauth(ctx, token=opened.token, password=PASSWORD))["token"]
        failures, _ = await ctx.failures.get(ctx.blind_index("login", EMAIL), clock.now.timestamp())
        assert failures == 0  # proved: the count starts again

    async def test_reauth_is_limited_per_account_and_needs_a_live_session(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        limited = replace(ctx, limiter=LimitsRateLimiter({"reauth_account": "1/minute"}))
        opened = await signed_in(ctx)
        await proof.reauth(limited, token=opened.token, password=PASSWORD)
        with pytest.raises(RateLimited):
            await proof.reauth(limited, token=opened.token, password=PASSWORD)
        await session.logout(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):
            await proof.reauth(ctx, token=opened.token, password=PASSWORD)

    async def test_the_window_is_the_policys(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        strict = replace(ctx, policy=replace(ctx.policy, step_up=timedelta(0)))
        opened = await signed_in(ctx)
        clock.advance(1)
        with pytest.raises(ReauthRequired):
            await profile.update(strict, token=opened.token, phone="+14155550199")
        await profile.update(ctx, token=opened.token, phone="+14155550199")
