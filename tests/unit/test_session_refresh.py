"""Refresh tokens kept in their session's row (`domain.tokens.SessionRefresh`, migration 0009):
the format and its tag, the attacks on it (forged, altered, replayed, raced, minted with the
key alone), and sessions whose tokens are still rows of the old table."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gatehouse.domain import events
from gatehouse.domain.sessions import RefreshStep, SessionRecord
from gatehouse.domain.tokens import (
    RefreshToken,
    _tag,
    hash_refresh_token,
    new_refresh_token,
    new_session_refresh,
    read_session_refresh,
)
from gatehouse.errors import InvalidToken
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.sessions import rotation as session
from tests.fakes import MemoryDatabase, MemorySessions

from .helpers import FakeClock, outbox_messages
from .test_flows_session import EMAIL, PASSWORD, Account, make_account

KEY = b"k" * 32
SID = "0b6f6f7e-3f7e-4c9a-9f57-2d3c1c1a9e10"


@pytest.fixture
async def account(ctx: FlowContext, db: MemoryDatabase) -> Account:
    return await make_account(ctx, db)


def revoked_events(db: MemoryDatabase) -> list[str]:
    return [
        m.payload["data"]["reason"]
        for m in outbox_messages(db)
        if m.payload.get("type") == events.SESSION_REVOKED
    ]


class TestFormat:
    def test_round_trip(self) -> None:
        token, stored = new_session_refresh(KEY, SID, 7)
        assert token.plaintext.startswith("rs_")
        assert stored == hash_refresh_token(KEY, token.plaintext)
        assert token.plaintext not in stored
        read = read_session_refresh(KEY, token.plaintext)
        assert read == token
        assert (read.session_id, read.generation) == (SID, 7)

    def test_each_token_is_new(self) -> None:
        tokens = {new_session_refresh(KEY, SID, 1)[0].plaintext for _ in range(50)}
        assert len(tokens) == 50

    @pytest.mark.parametrize("part", [0, 1, 2, 3])
    def test_any_part_altered_is_refused(self, part: int) -> None:
        token, _ = new_session_refresh(KEY, SID, 3)
        parts = token.plaintext[3:].split(".")
        parts[part] = {0: "11111111-1111-4111-8111-111111111111", 1: "2"}.get(part, "A" * 32)
        assert read_session_refresh(KEY, "rs_" + ".".join(parts)) is None

    def test_another_key_refuses_it(self) -> None:
        token, _ = new_session_refresh(KEY, SID, 1)
        assert read_session_refresh(b"j" * 32, token.plaintext) is None

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "rs_",
            "rs_a.b.c",
            "rs_a.1.n.t.extra",
            f"rs_{SID}.-1.nonce.tag",
            f"rs_{SID}.\u00b2.nonce.tag",  # a digit to str.isdigit, not to int()
            f"rs_{SID}.{'9' * 19}.nonce.tag",
            f"rs_{SID}.01.nonce.{_tag(KEY, SID, 1, 'nonce')}",  # "01" is not the spelling of 1
            f"rs_{SID}.1.{'n' * 300}.tag",
            f"rs_.1.nonce.{_tag(KEY, '', 1, 'nonce')}",
            f"rs_{SID}.1..{_tag(KEY, SID, 1, '')}",
            "rt_" + "x" * 43,  # the older kind: not this reader's
        ],
    )
    def test_malformed_is_refused_not_raised(self, text: str) -> None:
        assert read_session_refresh(KEY, text) is None


class TestAttacks:
    async def test_forged_tag_revokes_nothing(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        """Knowing a session's id (any access token's `sid`) must not let anyone end it."""
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
        for generation in (0, 1, 2):
            with pytest.raises(InvalidToken):
                await session.refresh(ctx, refresh_token=f"rs_{sid}.{generation}.x.{'0' * 32}")
            await session.logout(ctx, refresh_token=f"rs_{sid}.{generation}.x.{'0' * 32}")
        assert db.tables.sessions[sid].revoked_at is None
        assert revoked_events(db) == []
        assert (await session.refresh(ctx, refresh_token=opened.refresh_token)).user["id"]

    async def test_the_key_alone_does_not_make_a_usable_token(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        """A token minted with a stolen key for the current generation (or a later one) lacks
        the random part whose hash the row keeps: refused, and the session goes on."""
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
        for generation in (1, 2, 9):
            minted, _ = new_session_refresh(ctx.secrets.token_key, sid, generation)
            with pytest.raises(InvalidToken):
                await session.refresh(ctx, refresh_token=minted.plaintext)
        assert db.tables.sessions[sid].refresh_generation == 1
        assert db.tables.sessions[sid].revoked_at is None
        assert (await session.refresh(ctx, refresh_token=opened.refresh_token)).user["id"]

    async def test_another_sessions_id_in_a_real_token_is_refused(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        mine = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        theirs = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        their_sid = ctx.tokens.verify(theirs.token, ctx.clock()).sid
        _sid, rest = mine.refresh_token[3:].split(".", 1)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=f"rs_{their_sid}.{rest}")
        assert db.tables.sessions[their_sid].revoked_at is None
        assert db.tables.sessions[their_sid].refresh_generation == 1

    async def test_every_spent_generation_revokes_the_session(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        """Not only the token just before: a thief who rotated twice is still caught when
        the owner comes back with the one they had."""
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, clock.now).sid
        latest = opened
        for _ in range(3):
            latest = await session.refresh(ctx, refresh_token=latest.refresh_token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        assert db.tables.sessions[sid].revoked_reason == "refresh_token_reuse"
        assert revoked_events(db) == ["refresh_token_reuse"]
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=latest.refresh_token)

    async def test_logout_with_a_token_made_with_the_key_alone_ends_nothing(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        """Everywhere or not: only the session's current token speaks for its owner, and one
        the service never issued is recorded as what it is, a sign the key has leaked."""
        mine = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        other = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(mine.token, ctx.clock()).sid
        for generation in (1, 999):
            minted, _ = new_session_refresh(ctx.secrets.token_key, sid, generation)
            await session.logout(ctx, refresh_token=minted.plaintext, everywhere=True)
        assert all(row.revoked_at is None for row in db.tables.sessions.values())
        assert revoked_events(db) == []
        refusals = [r for r in db.tables.audit if r.detail == "unissued_token"]
        assert [r.action for r in refusals] == ["logout", "logout"]
        assert (await session.refresh(ctx, refresh_token=other.refresh_token)).user["id"]

    async def test_a_spent_token_logs_out_its_own_session_only(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        mine = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        other = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        await session.refresh(ctx, refresh_token=mine.refresh_token)
        await session.logout(ctx, refresh_token=mine.refresh_token, everywhere=True)
        sid, other_sid = (ctx.tokens.verify(o.token, ctx.clock()).sid for o in (mine, other))
        assert db.tables.sessions[sid].revoked_reason == "logout"
        assert db.tables.sessions[other_sid].revoked_at is None
        assert revoked_events(db) == ["logout"]

    async def test_a_revocation_between_the_read_and_the_rotation_is_no_replay(
        self,
        ctx: FlowContext,
        db: MemoryDatabase,
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A logout (or password change, or an admin) that commits after the refresh read the
        row and before it rotated: refused as revoked, not recorded nor announced as reuse."""
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
        rotate = MemorySessions.rotate

        async def revoked_first(self: MemorySessions, step: RefreshStep) -> bool:
            row = db.tables.sessions[sid]
            db.tables.sessions[sid] = replace(row, revoked_at=ctx.clock(), revoked_reason="logout")
            return await rotate(self, step)

        monkeypatch.setattr(MemorySessions, "rotate", revoked_first)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        # (The fake's unit rolls its own "concurrent" write back with the rest: the answer and
        # the records are the point here.)
        assert revoked_events(db) == []
        [refusal] = [r for r in db.tables.audit if r.action == "refresh"]
        assert (refusal.outcome, refusal.detail) == ("failure", "revoked")

    async def test_two_refreshes_of_one_token_at_once(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
        results = await asyncio.gather(
            session.refresh(ctx, refresh_token=opened.refresh_token),
            session.refresh(ctx, refresh_token=opened.refresh_token),
            return_exceptions=True,
        )
        assert sum(isinstance(r, InvalidToken) for r in results) == 1
        assert db.tables.sessions[sid].revoked_reason == "refresh_token_reuse"

    async def test_a_disabled_account_rotates_nothing(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
        user = db.tables.users[account.id]
        db.tables.users[account.id] = replace(user, disabled_at=ctx.clock())
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        row = db.tables.sessions[sid]
        assert (row.refresh_generation, row.revoked_at) == (1, None)  # rolled back

    async def test_the_token_is_never_written_as_given(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        rotated = await session.refresh(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        written = repr(db.tables.sessions) + repr(outbox_messages(db)) + repr(db.tables.audit)
        for token in (opened.refresh_token, rotated.refresh_token):
            nonce = token.split(".")[2]
            assert nonce not in written


class TestSessionsFromBefore:
    """Sessions opened before migration 0009: their token is a refresh_tokens row."""

    async def _old_session(self, ctx: FlowContext, account: Account) -> tuple[str, str]:
        now = ctx.clock()
        sid = events.new_id()
        plaintext, token_hash = new_refresh_token(ctx.secrets.token_key)
        async with ctx.uow() as uow:
            await uow.sessions.add(SessionRecord(sid, account.id, now, now, now))
            token = RefreshToken(
                events.new_id(),
                sid,
                account.id,
                token_hash,
                now,
                now + ctx.policy.refresh_ttl,
                now + ctx.policy.refresh_family_max,
            )
            await uow.refresh_tokens.add(token)
            await uow.commit()
        return sid, plaintext

    async def test_first_refresh_moves_the_session_to_its_row(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        sid, plaintext = await self._old_session(ctx, account)
        family_end = clock.now + ctx.policy.refresh_family_max
        clock.advance(60)
        rotated = await session.refresh(ctx, refresh_token=plaintext)
        assert rotated.refresh_token.startswith("rs_")
        [row] = db.tables.tokens.values()
        assert row.used_at == clock.now
        moved = db.tables.sessions[sid]
        assert (moved.refresh_generation, moved.expires_at) == (1, family_end)
        again = await session.refresh(ctx, refresh_token=rotated.refresh_token)
        assert db.tables.sessions[sid].refresh_generation == 2
        assert again.user["id"] == account.id

    async def test_its_old_token_replayed_revokes_the_session(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        sid, plaintext = await self._old_session(ctx, account)
        rotated = await session.refresh(ctx, refresh_token=plaintext)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=plaintext)
        assert db.tables.sessions[sid].revoked_reason == "refresh_token_reuse"
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=rotated.refresh_token)

    async def test_logout_with_its_old_token(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        sid, plaintext = await self._old_session(ctx, account)
        await session.logout(ctx, refresh_token=plaintext)
        assert db.tables.sessions[sid].revoked_reason == "logout"
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=plaintext)
