"""A refresh in one statement on PostgreSQL (storage/pg_refresh.py) against the ordinary path it is
derived from (sessions.rotation.refresh over the unit of work), on the real database: the same rows
written for a good token, and for every token that is not good nothing written by it and the
same answer, records and revocations as the ordinary path; concurrent presentations of one
token: one new token, then the session revoked as a replay."""

from __future__ import annotations

import asyncio
import dataclasses
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
from gatehouse.storage.pg_refresh import PgRotations, arguments, rotate_statement
from tests.integration.at_once import START, Paths, batch_sizes, both_paths

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
    records = await paths.records(user.id)
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


def rotation_of(paths: Paths, opened: Session) -> Rotation:
    """What the at-once path asks to write for `opened`'s refresh token, now."""
    key = paths.at_once.secrets.token_key
    token = read_session_refresh(key, opened.refresh_token)
    assert token is not None
    return Rotation(
        session_id=token.session_id,
        generation=token.generation,
        presented_hash=hash_refresh_token(key, opened.refresh_token),
        now=paths.clock.now,
        replacement_hash=new_id(),
        replacement_expires_at=paths.clock.now + timedelta(days=1),
        record=audit_entry(paths.at_once, "refresh", factor="refresh_token"),
    )


@pytest.mark.parametrize("count", [1, 3])
async def test_a_rotation_reads_one_row_a_step_however_many_sessions_there_are(
    paths: Paths, postgres_database: str, count: int
) -> None:
    """The statement finds each session by its id, then its user by theirs, whatever the
    planner guesses: on tables never analysed (a young database), a plan that started from the
    users probed another table's index once for every live session. Read with the values as
    constants and as the generic plan asyncpg's cached statement runs; for one rotation and
    for a batch of them (`count`, each another user's)."""
    tables = ("users", "sessions")
    conn = await asyncpg.connect(postgres_database.replace("postgresql+asyncpg", "postgresql"))
    try:
        for table in tables:  # never analysed while the test runs: the young database's case
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        ctx = paths.at_once
        users = [await account(ctx, n) for n in range(3)]
        presented = [await signed_in(ctx, user) for user in users[:count]]
        for user in users:  # 60 more live sessions, 20 of each user's
            for _ in range(20):
                await signed_in(ctx, user)
        analysed = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY($1) "
            "AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL",
            list(tables),
        )
        assert analysed == 0
        rotations = [rotation_of(paths, opened) for opened in presented]
        statement, values = rotate_statement(count), arguments(rotations)
        # EXECUTE takes no protocol parameters: the values written out as literals.
        literals = ", ".join(
            "NULL" if v is None else "'" + str(v).replace("'", "''") + "'" for v in values
        )
        await conn.execute("PREPARE rotate AS " + statement)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        readings = {
            "constants": ("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, values),
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
        # Each token was good: each session was rotated.
        assert plan["Plan"]["Actual Rows"] == count, name
        every = nodes(plan["Plan"])
        steps = every[1:] if count > 1 else every  # below the answers' union, if a batch
        # No step ran once for each row of another, and none read a row it did not keep.
        assert max(n["Actual Loops"] for n in every) == 1, name
        assert max(n["Actual Rows"] for n in steps) == 1, name
        assert not any(n.get("Rows Removed by Filter") for n in every), name
        assert not any(n["Node Type"] == "Seq Scan" for n in every), name


async def test_refreshes_of_many_sessions_at_once_share_statements_and_each_gets_its_own(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent refreshes go to PostgreSQL in batches (storage/pg_batch.py): fewer statements
    than refreshes, and each answered with its own session and user, rotated once, recorded
    once as that user's; tokens that are not good, in the same batches, get the answer they
    get alone (a replay revokes its session; a disabled user's token is refused)."""
    rotations = paths.at_once.rotations
    assert isinstance(rotations, PgRotations)
    sizes = batch_sizes(monkeypatch, rotations._batches)
    ctx = paths.at_once
    users = [await account(ctx, n) for n in range(24)]
    opened = [await signed_in(ctx, user) for user in users]
    replayed, disabled = users[0], users[1]
    await session.refresh(paths.ordinary, refresh_token=opened[0].refresh_token)  # spent now
    async with ctx.uow() as uow:
        await uow.users.update(disabled.with_changes(disabled_at=paths.clock.now))
        await uow.commit()
    paths.clock.now = START + timedelta(minutes=1)
    results = await asyncio.gather(
        *(session.refresh(ctx, refresh_token=o.refresh_token) for o in opened),
        return_exceptions=True,
    )
    print(f"\n{len(opened)} refreshes at once went as batches of {sizes}")
    assert isinstance(results[0], InvalidToken) and isinstance(results[1], InvalidToken)
    assert len(sizes) < len(opened) and max(sizes) > 1
    for user, before, after in zip(users[2:], opened[2:], results[2:], strict=True):
        assert isinstance(after, Session), after
        assert after.user["id"] == user.id and after.user["email"] == user.email
        claims = ctx.tokens.verify(after.token, paths.clock.now)
        assert claims.sub == user.id and claims.sid == ctx.tokens.verify(before.token, START).sid
        state = await written(paths, user)
        assert state["sessions"][0]["refresh_generation"] == 2
        assert state["sessions"][0]["revoked_at"] is None
        assert [(r["action"], r["outcome"], r["by_the_user"]) for r in state["records"]] == [
            ("login", "success", True),
            ("refresh", "success", True),
        ]
        again = await session.refresh(ctx, refresh_token=after.refresh_token)  # the new one works
        assert again.user["id"] == user.id
    assert (await written(paths, replayed))["sessions"][0]["revoked_reason"] == (
        "refresh_token_reuse"
    )
    disabled_state = await written(paths, disabled)
    assert disabled_state["sessions"][0]["refresh_generation"] == 1  # not rotated
    assert [r["action"] for r in disabled_state["records"]] == ["login", "refresh"]
    assert disabled_state["records"][-1]["outcome"] != "success"


async def test_a_rotation_the_database_refuses_fails_alone_not_its_whole_batch(
    paths: Paths,
) -> None:
    """A batch is one statement: a value the database refuses in one rotation would fail the
    others beside it. The batch is run again a rotation at a time: only that one fails."""
    rotations = paths.at_once.rotations
    assert isinstance(rotations, PgRotations)
    users = [await account(paths.at_once, n) for n in range(4)]
    asked = [rotation_of(paths, await signed_in(paths.at_once, user)) for user in users]
    # Longer than its column (the door cuts client addresses to 64 characters).
    record = dataclasses.replace(asked[1].record, client_address="9" * 100)
    asked[1] = dataclasses.replace(asked[1], record=record)
    results = await asyncio.gather(*(rotations.rotate(r) for r in asked), return_exceptions=True)
    assert isinstance(results[1], asyncpg.StringDataRightTruncationError)
    for user, result in zip(users, results, strict=True):
        if user is users[1]:
            continue
        assert isinstance(result, tuple), result
        assert result[1].id == user.id
        assert (await written(paths, user))["sessions"][0]["refresh_generation"] == 2
    refused = await written(paths, users[1])
    assert refused["sessions"][0]["refresh_generation"] == 1
    assert [r["action"] for r in refused["records"]] == ["login"]


async def test_a_logout_everywhere_beside_a_batch_of_its_users_sessions_never_deadlocks(
    paths: Paths,
) -> None:
    """A batch locks its sessions in id order, and a logout everywhere locks the user's in the
    same order (pg_sessions.py): the two never wait on each other in a cycle, so the logout
    (a security action, never retried) always goes through, each time."""
    ctx = paths.at_once
    for n in range(8):
        user = await account(ctx, n)
        refreshing = [await signed_in(ctx, user) for _ in range(4)]
        leaving = await signed_in(ctx, user)
        results = await asyncio.gather(
            *(session.refresh(ctx, refresh_token=o.refresh_token) for o in refreshing),
            session.logout(ctx, refresh_token=leaving.refresh_token, everywhere=True),
            return_exceptions=True,
        )
        assert results[-1] is None, results[-1]  # the logout went through
        assert all(isinstance(r, Session | InvalidToken) for r in results[:-1]), results
        state = await written(paths, user)
        assert all(s["revoked_at"] is not None for s in state["sessions"])  # all ended
