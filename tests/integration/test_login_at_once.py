"""A password sign-in in one statement on PostgreSQL (storage/pg_signin.py) against the ordinary
path it is derived from (login.flow.login over the unit of work), on the real database: for the
plain outcome (a known device, or an account's first sign-in) the same session, event and record,
written by the one statement; for every other outcome (a second factor, a device new to the
account) the statement writes nothing and the ordinary path answers as it always did; an account
disabled while its password was checked is refused, with nothing written but the refusal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from argon2 import PasswordHasher

from gatehouse.domain.events import LOGGED_IN, new_id
from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.domain.users import User
from gatehouse.errors import InvalidCredentials
from gatehouse.ports.signin import Opened, SessionOpening, SessionOpenings
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.login.second import MfaChallenge
from gatehouse.selfservice.notices import TEMPLATE
from gatehouse.selfservice.sessions.flow import Session
from gatehouse.storage import pg_signin
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
def answers(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> list[Opened]:
    """What the one statement answered, each time the flow asked it."""
    seen: list[Opened] = []
    openings = paths.at_once.sign_ins
    assert openings is not None
    opened = openings.open

    async def counted(opening: SessionOpening) -> Opened:
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


@dataclass(frozen=True)
class Setting:
    """An account made `made` days before START, its earlier sign-ins (days before START, user
    agent) on the ordinary path, the factor it has, and the sign-in's user agent."""

    made: int
    earlier: tuple[tuple[int, str | None], ...] = ()
    factor: str | None = None
    agent: str | None = PHONE_UA


PLAIN = {
    "known device": Setting(400, earlier=((1, PHONE_UA),)),
    "first sign-in": Setting(3),
    "recent account, same device": Setting(3, earlier=((1, PHONE_UA),)),
    "no user agent, as before": Setting(400, earlier=((1, None),), agent=None),
}
OTHERS = {
    # A device new to the account: the ordinary path writes a notice.
    "new device": Setting(400, earlier=((1, LAPTOP_UA),)),
    "old account, no session": Setting(400),
    "recent account, another device": Setting(3, earlier=((1, LAPTOP_UA),)),
    "same device, long ago": Setting(400, earlier=((100, PHONE_UA),)),
    "no user agent, a named one before": Setting(400, earlier=((1, LAPTOP_UA),), agent=None),
    # A second factor: the challenge.
    "totp": Setting(400, earlier=((1, LAPTOP_UA),), factor="totp", agent=LAPTOP_UA),
    "passkey": Setting(400, earlier=((1, LAPTOP_UA),), factor="passkey", agent=LAPTOP_UA),
}


async def both_ways(paths: Paths, setting: Setting) -> tuple[list[Any], list[dict[str, Any]]]:
    """The sign-in of `setting` on each path, each on an account of its own: the answers (their
    secrets left out) and what each left written."""
    replies, seen = [], []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        user = await account(ctx, n, made=timedelta(days=setting.made))
        for days, agent in setting.earlier:
            paths.clock.now = START - timedelta(days=days)
            assert isinstance(await sign_in(paths.ordinary, user, agent), Session)
        if setting.factor:
            await second_factor(ctx, user, setting.factor)
        paths.clock.now = START
        opened = await sign_in(ctx, user, setting.agent)
        assert isinstance(opened, MfaChallenge) == (setting.factor is not None)
        if isinstance(opened, Session):
            # The answer's tokens are good: the access token names the session written.
            claims = ctx.tokens.verify(opened.token, START)
            rows = await paths.rows("SELECT id FROM sessions WHERE id = :s", s=claims.sid)
            assert rows == [{"id": claims.sid}] and opened.user["id"] == user.id
        replies.append(same_answer(opened))
        seen.append(await written(paths, user))
    return replies, seen


def notices_now(written: dict[str, Any]) -> int:
    """The notices of the sign-in at START (an earlier one's, from a device new then, is the
    setting's)."""
    return sum(1 for e in written["events"] if str(e[1]).startswith(TEMPLATE) and e[3] == START_AT)


@pytest.mark.parametrize("case", PLAIN)
async def test_the_plain_outcome_is_written_at_once_as_the_ordinary_path_writes_it(
    paths: Paths, answers: list[Opened], case: str
) -> None:
    setting = PLAIN[case]
    replies, (at_once, ordinary) = await both_ways(paths, setting)
    assert answers == [Opened.OPENED]  # the at-once context's sign-in, in one statement
    assert at_once == ordinary
    assert replies[0] == replies[1]
    assert ordinary["records"][-1]["action"] == "login"
    assert ordinary["records"][-1]["outcome"] == "success"
    assert [e[1] for e in ordinary["events"]].count(LOGGED_IN) == len(setting.earlier) + 1
    assert notices_now(ordinary) == 0


async def second_factor(ctx: FlowContext, user: User, kind: str) -> None:
    async with ctx.uow() as uow:
        if kind == "totp":
            secret = ctx.keyring.encrypt("JBSWY3DPEHPK3PXP", "user.totp_secret")
            await uow.factors.put_totp(TotpFactor(user.id, secret, START, confirmed_at=START))
        else:
            passkey = Passkey(new_id(), user.id, new_id(), "cHVibGlj", 0, "key", START)
            await uow.factors.add_passkey(passkey)
        await uow.commit()


@pytest.mark.parametrize("case", OTHERS)
async def test_every_other_outcome_is_the_ordinary_paths_and_the_statement_writes_nothing(
    paths: Paths, answers: list[Opened], case: str
) -> None:
    setting = OTHERS[case]
    replies, (at_once, ordinary) = await both_ways(paths, setting)
    assert answers == [Opened.OTHER]  # asked, wrote nothing: the ordinary path wrote the rest
    assert at_once == ordinary
    assert replies[0] == replies[1]
    assert notices_now(ordinary) == (0 if setting.factor else 1), ordinary


def test_the_statement_knows_the_flows_finishing_factors() -> None:
    # The statement writes login.second.FINISHING in SQL: a factor added there must be here.
    assert pg_signin.FINISHING == second.FINISHING


async def test_a_hash_to_renew_takes_the_ordinary_path(paths: Paths, answers: list[Opened]) -> None:
    ctx = paths.at_once
    paths.clock.now = START
    user = await account(ctx, 0, made=timedelta(days=3))
    older = PasswordHasher(memory_cost=512, time_cost=1, parallelism=1).hash(PASSWORD)
    async with ctx.uow() as uow:
        await uow.users.update(user.with_changes(password_hash=older))
        await uow.commit()
    assert isinstance(await sign_in(ctx, user, PHONE_UA), Session)
    assert answers == []  # never asked: it does not write users
    [row] = await paths.rows("SELECT password_hash FROM users WHERE id = :u", u=user.id)
    assert row["password_hash"] != older and "m=1024" in row["password_hash"]


async def test_a_sign_in_at_once_clears_the_failure_count(
    paths: Paths, answers: list[Opened]
) -> None:
    ctx = paths.at_once
    paths.clock.now = START
    user = await account(ctx, 0, made=timedelta(days=3))
    with pytest.raises(InvalidCredentials):
        await login_flow.login(ctx, email=user.email, password="not the password")
    key = ctx.blind_index("login", user.email)
    assert (await ctx.failures.get(key, START.timestamp()))[0] == 1
    assert isinstance(await sign_in(ctx, user, PHONE_UA), Session)
    assert answers == [Opened.OPENED]
    assert (await ctx.failures.get(key, START.timestamp()))[0] == 0


async def disable(ctx: FlowContext, user: User, when: datetime | None) -> None:
    async with ctx.uow() as uow:
        await uow.users.update(user.with_changes(disabled_at=when))
        await uow.commit()


CHANGES = {
    "disabled": ("disabled", Opened.DISABLED),
    "deleted": ("disabled", Opened.DISABLED),
    "new password": ("password_changed", Opened.CHANGED),
    "new password, old hash to renew": ("password_changed", None),
}


@pytest.mark.parametrize("path", ["at once", "ordinary"])
@pytest.mark.parametrize("change", CHANGES)
async def test_an_account_changed_while_its_password_is_checked_is_refused(
    paths: Paths, answers: list[Opened], monkeypatch: pytest.MonkeyPatch, path: str, change: str
) -> None:
    """Disabled, deleted or given a new password (a reset) by someone else between the read
    and the write: refused as a wrong password is, nothing written but the refusal, and the
    change not undone (a renewed hash once wrote the whole row read before it back)."""
    ctx = paths.at_once if path == "at once" else paths.ordinary
    paths.clock.now = START
    user = await account(ctx, 0, made=timedelta(days=3))  # a first sign-in: plain
    if change.endswith("to renew"):
        older = PasswordHasher(memory_cost=512, time_cost=1, parallelism=1).hash(PASSWORD)
        user = user.with_changes(password_hash=older)
        async with ctx.uow() as uow:
            await uow.users.update(user)
            await uow.commit()
    reset = await ctx.hasher.hash("a new password, chosen meanwhile")
    verify = ctx.hasher.verify

    async def verify_then_change(stored: str, password: str) -> tuple[bool, bool]:
        checked = await verify(stored, password)
        async with ctx.uow() as uow:  # an operator, or the owner's reset, meanwhile
            if change == "deleted":
                await uow.users.delete(user.id)
            elif change == "disabled":
                await uow.users.update(user.with_changes(disabled_at=START))
            else:
                await uow.users.update(user.with_changes(password_hash=reset))
            await uow.commit()
        return checked

    monkeypatch.setattr(ctx.hasher, "verify", verify_then_change)
    with pytest.raises(InvalidCredentials):
        await sign_in(ctx, user, PHONE_UA)
    reason, answered = CHANGES[change]
    assert answers == ([answered] if path == "at once" and answered else [])
    left = await written(paths, user)
    assert left["sessions"] == [] and left["events"] == []
    assert [(r["action"], r["outcome"], r["detail"]) for r in left["records"]] == [
        ("login", "failure", reason)
    ]
    key = ctx.blind_index("login", user.email)
    assert (await ctx.failures.get(key, START.timestamp()))[0] == 1
    rows = await paths.rows("SELECT password_hash, disabled_at FROM users WHERE id = :u", u=user.id)
    if change == "deleted":
        assert rows == []
    elif change == "disabled":
        assert rows == [{"password_hash": user.password_hash, "disabled_at": START_AT}]
    else:
        assert rows == [{"password_hash": reset, "disabled_at": None}]


async def first_opening(paths: Paths) -> tuple[User, SessionOpening, SessionOpenings]:
    """A new account, what the flow would send for its first sign-in (plain), and the path."""
    ctx = paths.at_once
    paths.clock.now = START
    user = await account(ctx, 0, made=timedelta(days=1))
    openings = ctx.sign_ins
    assert openings is not None
    captured: list[SessionOpening] = []

    class Capture:
        async def open(self, opening: SessionOpening) -> Opened:
            captured.append(opening)
            return Opened.OTHER

    assert await login_flow._open_at_once(ctx, Capture(), user, PHONE_UA, START) is Opened.OTHER
    return user, captured[0], openings


async def test_a_disable_committing_during_the_statement_is_waited_for(paths: Paths) -> None:
    """The user's row is read FOR SHARE: a disable holding it makes the sign-in wait, then
    refuse (without the lock, the statement would read the row as it was and open a session
    the disable's ending of every session never saw)."""
    user, opening, openings = await first_opening(paths)
    url = paths.services.settings.database_url.replace("postgresql+asyncpg", "postgresql")
    operator = await asyncpg.connect(url)
    try:
        disabling = operator.transaction()
        await disabling.start()
        await operator.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user.id)
        opened = asyncio.create_task(openings.open(opening))
        for _ in range(200):  # until the statement waits on the row's lock
            waiting = await operator.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%FOR SHARE%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting == 1 and not opened.done()
        await disabling.commit()
        assert await asyncio.wait_for(opened, 10) is Opened.DISABLED
    finally:
        await operator.close()
    assert (await written(paths, user))["sessions"] == []


async def test_the_statement_writes_nothing_for_a_disabled_account(paths: Paths) -> None:
    ctx = paths.at_once
    # What the flow sends for the account as it read it, enabled...
    user, opening, openings = await first_opening(paths)
    # ...reaching the database after an operator disabled it.
    await disable(ctx, user, START)
    assert await openings.open(opening) is Opened.DISABLED
    assert (await written(paths, user)) == {"sessions": [], "records": [], "events": []}
    # The same opening for the account enabled again is written: the refusal was the disable.
    await disable(ctx, user, None)
    assert await openings.open(opening) is Opened.OPENED
    assert len((await written(paths, user))["sessions"]) == 1
