"""A password sign-in in one statement on PostgreSQL (storage/pg_signin.py) against the ordinary
path it is derived from (login.flow.login over the unit of work), on the real database: for the
plain outcome (a known device, or an account's first sign-in) the same session, event and record,
written by the one statement; for every other outcome (a second factor, a device new to an old
account, an account disabled after its read) the statement writes nothing and the ordinary path
answers as it always did."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gatehouse.domain.events import LOGGED_IN, new_id
from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.domain.users import User
from gatehouse.ports.signin import SessionOpening
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login.second import MfaChallenge
from gatehouse.selfservice.notices import TEMPLATE
from gatehouse.selfservice.sessions.flow import Session
from gatehouse.storage.pg_signin import PgSessionOpenings
from tests.integration.at_once import START, Paths, both_paths

pytestmark = pytest.mark.integration
START_AT = START.replace(tzinfo=None)  # as stored
PASSWORD = "correct horse battery staple"
PHONE_UA = "Mozilla/5.0 (phone)"
LAPTOP_UA = "Mozilla/5.0 (laptop)"


@pytest.fixture
async def paths(postgres_database: str, tmp_path: Path) -> AsyncIterator[Paths]:
    async with both_paths(postgres_database, tmp_path, "sign_ins", PgSessionOpenings) as opened:
        yield opened


@pytest.fixture
def answers(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the one statement answered, each time the flow asked it."""
    seen: list[bool] = []
    openings = paths.at_once.sign_ins
    assert openings is not None
    opened = openings.open

    async def counted(opening: SessionOpening) -> bool:
        seen.append(await opened(opening))
        return seen[-1]

    monkeypatch.setattr(openings, "open", counted)
    return seen


async def account(ctx: FlowContext, n: int, *, made: timedelta = timedelta(days=400)) -> User:
    """An account made `made` before START."""
    user = User(
        id=new_id(),
        email=f"signin-{n}-{new_id()[:8]}@example.com",
        name=f"User {n}",
        password_hash=await ctx.hasher.hash(PASSWORD),
        created_at=START - made,
        updated_at=START - made,
        email_verified_at=START - made,
    )
    async with ctx.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    return user


async def sign_in(ctx: FlowContext, user: User, agent: str | None) -> Session | MfaChallenge:
    return await login_flow.login(ctx, email=user.email, password=PASSWORD, user_agent=agent)


async def written(paths: Paths, user: User) -> dict[str, Any]:
    """What sign-ins left of `user`, without ids or hashes."""
    sessions = await paths.rows(
        "SELECT created_at, last_used_at, auth_time, user_agent, amr, aal, revoked_at, "
        "refresh_generation, refresh_expires_at, expires_at, refresh_hash IS NOT NULL AS hashed "
        "FROM sessions WHERE user_id = :u ORDER BY created_at, user_agent",
        u=user.id,
    )
    records = await paths.records(user.id)
    events = await paths.rows(
        "SELECT topic, payload, created_at FROM outbox WHERE message_key = :u "
        "ORDER BY created_at, id",
        u=user.id,
    )
    kinds = []
    for event in events:
        payload = json.loads(event["payload"].replace(user.id, "<user>"))
        # A user event's type and data; a delivery (a notice's mail) by its template.
        what = payload.get("type") or payload.get("template")
        kinds.append((event["topic"], what, payload.get("data"), event["created_at"]))
    return {"sessions": sessions, "records": records, "events": sorted(kinds, key=str)}


def same_answer(opened: Session | MfaChallenge) -> Any:
    if isinstance(opened, MfaChallenge):
        return {**opened.as_data(), "mfa_token": None}
    return {**opened.as_data(), "token": None, "refresh_token": None, "user": None}


@pytest.mark.parametrize("case", ["known device", "first sign-in", "recent account"])
async def test_the_plain_outcome_is_written_at_once_as_the_ordinary_path_writes_it(
    paths: Paths, answers: list[bool], case: str
) -> None:
    seen, replies = [], []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        paths.clock.now = START
        made = timedelta(days=3) if case != "known device" else timedelta(days=400)
        user = await account(ctx, n, made=made)
        if case != "first sign-in":
            # An earlier sign-in from the same device (the ordinary path: the case's setting).
            paths.clock.now = START - timedelta(days=1)
            earlier = await sign_in(paths.ordinary, user, PHONE_UA)
            assert isinstance(earlier, Session)
        paths.clock.now = START
        opened = await sign_in(ctx, user, PHONE_UA)
        assert isinstance(opened, Session)
        # The answer's tokens are good: the access token names the session written.
        claims = ctx.tokens.verify(opened.token, START)
        rows = await paths.rows("SELECT id FROM sessions WHERE id = :s", s=claims.sid)
        assert rows == [{"id": claims.sid}] and opened.user["id"] == user.id
        replies.append(same_answer(opened))
        seen.append(await written(paths, user))
    assert answers == [True]  # the at-once context's sign-in, in one statement
    at_once, ordinary = seen
    assert at_once == ordinary
    assert replies[0] == replies[1]
    assert ordinary["records"][-1]["action"] == "login"
    assert ordinary["records"][-1]["outcome"] == "success"
    assert [e[1] for e in ordinary["events"]].count(LOGGED_IN) == (
        1 if case == "first sign-in" else 2
    )


async def second_factor(ctx: FlowContext, user: User, kind: str) -> None:
    async with ctx.uow() as uow:
        if kind == "totp":
            secret = ctx.keyring.encrypt("JBSWY3DPEHPK3PXP", "user.totp_secret")
            await uow.factors.put_totp(TotpFactor(user.id, secret, START, confirmed_at=START))
        else:
            passkey = Passkey(new_id(), user.id, new_id(), "cHVibGlj", 0, "key", START)
            await uow.factors.add_passkey(passkey)
        await uow.commit()


@pytest.mark.parametrize("case", ["new device", "old account, no session", "totp", "passkey"])
async def test_every_other_outcome_is_the_ordinary_paths_and_the_statement_writes_nothing(
    paths: Paths, answers: list[bool], case: str
) -> None:
    seen, replies = [], []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        user = await account(ctx, n)
        if case in ("new device", "totp", "passkey"):
            paths.clock.now = START - timedelta(days=1)
            assert isinstance(await sign_in(paths.ordinary, user, LAPTOP_UA), Session)
        if case in ("totp", "passkey"):
            await second_factor(ctx, user, case)
        paths.clock.now = START
        agent = LAPTOP_UA if case in ("totp", "passkey") else PHONE_UA
        opened = await sign_in(ctx, user, agent)
        assert isinstance(opened, MfaChallenge) == (case in ("totp", "passkey"))
        replies.append(same_answer(opened))
        seen.append(await written(paths, user))
    assert answers == [False]  # asked, wrote nothing: the ordinary path wrote what is seen
    assert seen[0] == seen[1]
    assert replies[0] == replies[1]
    # This sign-in's notice (the earlier one's, from a device new then, is the setting's).
    notices = [e for e in seen[1]["events"] if str(e[1]).startswith(TEMPLATE) and e[3] == START_AT]
    assert len(notices) == (1 if case in ("new device", "old account, no session") else 0), seen


async def test_an_account_disabled_after_its_read_gets_no_session(paths: Paths) -> None:
    ctx = paths.at_once
    paths.clock.now = START
    user = await account(ctx, 0, made=timedelta(days=1))  # a first sign-in: plain
    openings = ctx.sign_ins
    assert openings is not None
    # What the flow sends for the account as it read it, enabled...
    captured: list[SessionOpening] = []

    class Capture:
        async def open(self, opening: SessionOpening) -> bool:
            captured.append(opening)
            return False

    assert await login_flow._open_at_once(ctx, Capture(), user, PHONE_UA, START) is None
    # ...reaching the database after an operator disabled it.
    async with ctx.uow() as uow:
        await uow.users.update(user.with_changes(disabled_at=START))
        await uow.commit()
    assert await openings.open(captured[0]) is False
    assert (await written(paths, user)) == {"sessions": [], "records": [], "events": []}
    # The same opening for the account enabled again is written: the refusal was the disable.
    async with ctx.uow() as uow:
        await uow.users.update(user.with_changes(disabled_at=None))
        await uow.commit()
    assert await openings.open(captured[0]) is True
    assert len((await written(paths, user))["sessions"]) == 1
