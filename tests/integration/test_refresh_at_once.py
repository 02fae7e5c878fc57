"""A refresh in one statement on PostgreSQL (storage/pg_refresh.py) against the ordinary path it is
derived from (sessions.rotation.refresh over the unit of work), on the real database: the same rows
written for a good token, and for every token that is not good nothing written by it and the
same answer, records and revocations as the ordinary path; concurrent presentations of one
token: one new token, then the session revoked as a replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gatehouse.domain.events import new_id
from gatehouse.domain.tokens import hash_refresh_token, read_session_refresh
from gatehouse.domain.users import User
from gatehouse.errors import InvalidToken
from gatehouse.ports.rotation import Rotation
from gatehouse.selfservice.audit import audit_entry
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.sessions import rotation as session
from gatehouse.selfservice.sessions.flow import Session
from gatehouse.storage.pg_refresh import ROTATE, PgRotations, arguments
from tests.integration.at_once import START, Paths, both_paths

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def paths(postgres_database: str, tmp_path: Path) -> AsyncIterator[Paths]:
    async with both_paths(postgres_database, tmp_path, "rotations", PgRotations) as opened:
        yield opened


async def account(ctx: FlowContext, n: int) -> User:
    user = User(
        id=new_id(),
        email=f"refresh-{n}-{new_id()[:8]}@example.com",
        name=f"User {n}",
        password_hash=await ctx.hasher.hash(PASSWORD),
        created_at=START,
        updated_at=START,
        email_verified_at=START,
    )
    async with ctx.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    return user


async def signed_in(ctx: FlowContext, user: User) -> Session:
    opened = await login_flow.login(ctx, email=user.email, password=PASSWORD)
    assert isinstance(opened, Session)
    return opened


async def written(paths: Paths, user: User) -> dict[str, Any]:
    """What a refresh leaves of `user`, without ids, hashes or the chain's links."""
    tokens = await paths.rows(
        "SELECT created_at, expires_at, family_expires_at, used_at, revoked_at, "
        "family_id = (SELECT id FROM sessions WHERE user_id = :u) AS of_the_session "
        "FROM refresh_tokens WHERE user_id = :u ORDER BY created_at, used_at NULLS LAST",
        u=user.id,
    )
    sessions = await paths.rows(
        "SELECT last_used_at, auth_time, amr, aal, revoked_at, revoked_reason, "
        "refresh_generation, refresh_expires_at, expires_at, refresh_hash IS NOT NULL AS hashed "
        "FROM sessions WHERE user_id = :u",
        u=user.id,
    )
    records = await paths.rows(
        "SELECT at, actor, action, outcome, actor_id = user_id AS by_the_user, factor, detail, "
        "client_address FROM audit_log WHERE user_id = :u ORDER BY id",
        u=user.id,
    )
    events = await paths.rows(
        "SELECT payload FROM outbox WHERE message_key = :u ORDER BY created_at", u=user.id
    )
    ids = await paths.rows("SELECT id FROM sessions WHERE user_id = :u", u=user.id)

    def anonymous(payload: str) -> str:
        for row in ids:
            payload = payload.replace(row["id"], "<session>")
        return payload.replace(user.id, "<user>")

    return {
        "tokens": tokens,
        "sessions": sessions,
        "records": records,
        "events": [
            (event["type"], event["data"])
            for event in (json.loads(anonymous(e["payload"])) for e in events)
        ],
    }


async def test_a_good_token_writes_what_the_ordinary_path_writes(paths: Paths) -> None:
    seen: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        paths.clock.now = START
        user = await account(ctx, n)
        opened = await signed_in(ctx, user)
        paths.clock.now = START + timedelta(minutes=5)
        rotated = await session.refresh(ctx, refresh_token=opened.refresh_token)
        claims = ctx.tokens.verify(rotated.token, paths.clock.now)
        assert claims.sub == user.id and claims.sid == ctx.tokens.verify(opened.token, START).sid
        answers.append(
            {
                **rotated.as_data(),
                "token": None,
                "refresh_token": None,
                "user": {**rotated.user, "id": None, "email": None, "name": None},
            }
        )
        # The new refresh token works, on either path.
        again = await session.refresh(paths.ordinary, refresh_token=rotated.refresh_token)
        assert again.user["id"] == user.id
        seen.append(await written(paths, user))
    at_once, ordinary = seen
    print(f"\none refresh leaves, on either path: {ordinary['sessions']}")
    assert at_once == ordinary
    assert ordinary["tokens"] == []  # the session's row holds its token: no row of its own
    assert ordinary["sessions"][0]["refresh_generation"] == 3
    assert answers[0] == answers[1]
    assert [r["action"] for r in ordinary["records"]] == ["login", "refresh", "refresh"]


async def end_it(paths: Paths, case: str, user: User, opened: Session) -> str:
    """Makes `opened`'s refresh token not good, as `case` says; the token to present."""
    ctx = paths.ordinary
    if case == "unknown":
        return "rt_" + "x" * 43
    if case == "replayed":
        await session.refresh(ctx, refresh_token=opened.refresh_token)
    elif case == "logged_out":
        await session.logout(ctx, refresh_token=opened.refresh_token)
    elif case == "session_ended":  # the session alone (its tokens not revoked with it)
        sid = ctx.tokens.verify(opened.token, paths.clock.now).sid
        async with ctx.uow() as uow:
            await uow.sessions.revoke(sid, paths.clock.now, "logout")
            await uow.commit()
    elif case == "disabled":
        async with ctx.uow() as uow:
            await uow.users.update(user.with_changes(disabled_at=paths.clock.now))
            await uow.commit()
    elif case == "expired":
        paths.clock.now = START + ctx.policy.refresh_ttl + timedelta(seconds=1)
    elif case == "family_expired":
        paths.clock.now = START + ctx.policy.refresh_family_max + timedelta(seconds=1)
    return opened.refresh_token


@pytest.mark.parametrize(
    "case",
    ["unknown", "replayed", "logged_out", "session_ended", "disabled", "expired", "family_expired"],
)
async def test_a_token_that_is_not_good_gets_the_ordinary_answer_and_writes(
    paths: Paths, case: str
) -> None:
    seen: list[dict[str, Any]] = []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        paths.clock.now = START
        user = await account(ctx, n)
        opened = await signed_in(ctx, user)
        presented = await end_it(paths, case, user, opened)
        before = await written(paths, user)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=presented)
        after = await written(paths, user)
        seen.append({"before": before, "after": after})
    at_once, ordinary = seen
    assert at_once == ordinary
    if case == "replayed":  # the ordinary path's replay detection ran: the session is revoked
        assert ordinary["after"]["sessions"][0]["revoked_reason"] == "refresh_token_reuse"
    if case != "replayed":  # nothing was rotated by the refused token
        assert ordinary["after"]["sessions"][0]["refresh_generation"] == 1


async def test_one_token_presented_at_once_many_times_is_rotated_once_then_revoked(
    paths: Paths,
) -> None:
    user = await account(paths.at_once, 1)
    opened = await signed_in(paths.at_once, user)
    results = await asyncio.gather(
        *(session.refresh(paths.at_once, refresh_token=opened.refresh_token) for _ in range(10)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Session)]
    refused = [r for r in results if isinstance(r, InvalidToken)]
    print(f"\n10 at once: {len(won)} rotated, {len(refused)} refused")
    assert len(won) == 1 and len(refused) == 9
    state = await written(paths, user)
    assert state["sessions"][0]["refresh_generation"] == 2  # rotated once, by one of them
    assert state["sessions"][0]["revoked_reason"] == "refresh_token_reuse"  # a replay ends it
    with pytest.raises(InvalidToken):
        await session.refresh(paths.at_once, refresh_token=won[0].refresh_token)


async def test_a_rotation_reads_one_row_a_step_however_many_sessions_there_are(
    paths: Paths, postgres_database: str
) -> None:
    """The statement finds the session by its id, then its user by theirs, whatever the
    planner guesses: on tables never analysed (a young database), a plan that started from the
    users probed another table's index once for every live session. Read with the values as
    constants and as the generic plan asyncpg's cached statement runs."""
    tables = ("users", "sessions")
    conn = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg", "postgresql"))
    try:
        for table in tables:  # never analysed while the test runs: the young database's case
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        ctx = paths.at_once
        users = [await account(ctx, n) for n in range(3)]
        presented = await signed_in(ctx, users[0])
        for user in users:  # 60 more live sessions, 20 of them the presented token's user's
            for _ in range(20):
                await signed_in(ctx, user)
        analysed = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY($1) "
            "AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL",
            list(tables),
        )
        assert analysed == 0
        token = read_session_refresh(ctx.secrets.token_key, presented.refresh_token)
        assert token is not None
        rotation = Rotation(
            session_id=token.session_id,
            generation=token.generation,
            presented_hash=hash_refresh_token(ctx.secrets.token_key, presented.refresh_token),
            now=paths.clock.now,
            replacement_hash=new_id(),
            replacement_expires_at=paths.clock.now + timedelta(days=1),
            record=audit_entry(ctx, "refresh", factor="refresh_token"),
        )
        values = arguments(rotation)
        # EXECUTE takes no protocol parameters: the values written out as literals.
        literals = ", ".join(
            "NULL" if v is None else "'" + str(v).replace("'", "''") + "'" for v in values
        )
        await conn.execute("PREPARE rotate AS " + ROTATE)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        readings = {
            "constants": ("EXPLAIN (ANALYZE, FORMAT JSON) " + ROTATE, values),
            "generic": (f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE rotate({literals})", []),
        }
        plans = {}
        for name, (explained, given) in readings.items():
            tx = conn.transaction()
            await tx.start()
            plans[name] = json.loads(await conn.fetchval(explained, *given))[0]
            await tx.rollback()  # the token stays good for the next reading
    finally:
        await conn.close()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    for name, plan in plans.items():
        assert plan["Plan"]["Actual Rows"] == 1, name  # the token was good: it was rotated
        every = nodes(plan["Plan"])
        # No step ran once for each row of another, and none read a row it did not keep.
        assert max(n["Actual Loops"] for n in every) == 1, name
        assert max(n["Actual Rows"] for n in every) == 1, name
        assert not any(n.get("Rows Removed by Filter") for n in every), name
        assert not any(n["Node Type"] == "Seq Scan" for n in every), name
