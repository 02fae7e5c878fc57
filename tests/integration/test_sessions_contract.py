"""The `Sessions` repository's contract, on SQLite, PostgreSQL (SQLAlchemy and asyncpg), MariaDB
and the unit suite's fake: rows round-trip, `touch` marks use (and proof) and answers with the
user, revocation is once, and the hot check `users.get_signed_in` follows the sessions table."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from gatehouse.domain.sessions import RefreshStep, SessionRecord
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from tests.integration.conftest import BACKENDS, FAKE, Units, create_database, drop_database
from tests.integration.test_sql_contract import NOW, a_user

on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)


def a_session(n: int, user_id: str, **changes: object) -> SessionRecord:
    fields: dict[str, object] = {
        "id": f"s-{n}",
        "user_id": user_id,
        "created_at": NOW + timedelta(seconds=n),
        "last_used_at": NOW + timedelta(seconds=n),
        "auth_time": NOW + timedelta(seconds=n),
        "user_agent": f"Browser/{n}",
    }
    return SessionRecord(**{**fields, **changes})  # type: ignore[arg-type]


@on_the_fake_too
async def test_sessions_round_trip_and_list_live_ones_newest_first(units: Units) -> None:
    user, other = a_user(1), a_user(2)
    first = a_session(1, user.id, amr=("pwd", "otp"), aal=2, user_agent="é" * 256)
    second, third = a_session(2, user.id, user_agent=None), a_session(3, user.id)
    theirs = a_session(4, other.id)
    async with units() as uow:
        for session in (first, second, third, theirs):
            await uow.sessions.add(session)
        await uow.commit()
    async with units() as uow:
        assert await uow.sessions.get("s-1") == first
        assert await uow.sessions.get("s-2") == second
        assert await uow.sessions.get("no-such-session") is None
        assert await uow.sessions.revoke("s-2", NOW, "logout") is True
        await uow.commit()
    async with units() as uow:
        live = await uow.sessions.list_live_for_user(user.id)
        revoked = await uow.sessions.get("s-2")
    assert [s.id for s in live] == ["s-3", "s-1"]
    assert live[1].amr == ("pwd", "otp") and live[1].aal == 2
    assert live[1].created_at.tzinfo is not None
    assert revoked is not None and (revoked.revoked_at, revoked.revoked_reason) == (NOW, "logout")


@on_the_fake_too
async def test_touch_marks_a_live_session_used_and_answers_with_its_user(units: Units) -> None:
    user = a_user(1)
    session = a_session(1, user.id)
    later, much_later = NOW + timedelta(minutes=5), NOW + timedelta(minutes=9)
    async with units() as uow:
        await uow.users.add(user)
        await uow.sessions.add(session)
        await uow.sessions.add(a_session(2, "no-such-user"))
        await uow.commit()
    async with units() as uow:
        touched = await uow.sessions.touch("s-1", later)
        await uow.commit()
    assert touched == (
        SessionRecord(**{**_fields(session), "last_used_at": later}),  # type: ignore[arg-type]
        user,
    )
    async with units() as uow:
        proved = await uow.sessions.touch("s-1", much_later, authenticated=True)
        assert await uow.sessions.touch("s-2", later) is None  # its user is gone
        assert await uow.sessions.touch("no-such-session", later) is None
        await uow.commit()
    assert proved is not None
    assert (proved[0].last_used_at, proved[0].auth_time) == (much_later, much_later)
    async with units() as uow:
        assert await uow.sessions.get("s-1") == proved[0]
        await uow.sessions.revoke("s-1", later, "session_deleted")
        assert await uow.sessions.touch("s-1", much_later) is None
        await uow.commit()


@on_the_fake_too
async def test_revoking_is_once_per_session_and_for_every_session_of_a_user(
    units: Units,
) -> None:
    async with units() as uow:
        for n in (1, 2, 3):
            await uow.sessions.add(a_session(n, "u-1"))
        await uow.sessions.add(a_session(4, "u-2"))
        await uow.commit()
    async with units() as uow:
        assert await uow.sessions.revoke("s-1", NOW, "logout") is True
        assert await uow.sessions.revoke("s-1", NOW, "again") is False
        assert await uow.sessions.revoke("no-such-session", NOW, "logout") is False
        assert await uow.sessions.revoke_user("u-1", NOW, "password_changed") == 2
        assert await uow.sessions.revoke_user("u-1", NOW, "password_changed") == 0
        await uow.commit()
    async with units() as uow:
        assert await uow.sessions.list_live_for_user("u-1") == []
        assert [s.id for s in await uow.sessions.list_live_for_user("u-2")] == ["s-4"]
        first, second = await uow.sessions.get("s-1"), await uow.sessions.get("s-2")
    assert first is not None and first.revoked_reason == "logout"  # the first reason stays
    assert second is not None and second.revoked_reason == "password_changed"


def a_step(generation: int, current: str | None, following: str, n: int = 1) -> RefreshStep:
    return RefreshStep(
        session_id=f"s-{n}",
        generation=generation,
        current_hash=current,
        next_hash=following,
        next_expires_at=NOW + timedelta(days=30),
        session_end=NOW + timedelta(days=90),
        now=NOW + timedelta(minutes=generation),
    )


@on_the_fake_too
async def test_rotate_moves_the_token_on_only_from_the_row_s_current_one(units: Units) -> None:
    """The ordinary path's rotation, on every database: from the generation and hash the row
    holds (a session from before 0009: generation 0, no hash), never from another, and never
    on a revoked session."""
    h1, h2, h3 = "a" * 64, "b" * 64, "c" * 64
    async with units() as uow:
        await uow.sessions.add(a_session(1, "u-1"))  # opened before 0009: its token a row
        await uow.sessions.add(a_session(2, "u-1", refresh_generation=1, refresh_hash=h1))
        await uow.commit()
    async with units() as uow:
        assert await uow.sessions.rotate(a_step(0, h1, h2)) is False  # the row has no hash
        assert await uow.sessions.rotate(a_step(0, None, h2)) is True
        assert await uow.sessions.rotate(a_step(0, None, h3)) is False  # already moved on
        assert await uow.sessions.rotate(a_step(1, h3, h3)) is False  # not its current hash
        assert await uow.sessions.rotate(a_step(2, h2, h3)) is False  # not its generation
        assert await uow.sessions.rotate(a_step(1, h1, h3, n=2)) is True
        assert await uow.sessions.rotate(a_step(1, h2, h3, n=404)) is False
        await uow.commit()
    async with units() as uow:
        moved = await uow.sessions.get("s-1")
        assert await uow.sessions.revoke("s-2", NOW, "logout") is True
        assert await uow.sessions.rotate(a_step(2, h3, h1, n=2)) is False  # revoked
        await uow.commit()
    assert moved is not None
    assert (moved.refresh_generation, moved.refresh_hash) == (1, h2)
    assert moved.refresh_expires_at == NOW + timedelta(days=30)
    assert moved.expires_at == NOW + timedelta(days=90)
    assert moved.last_used_at == NOW
    async with units() as uow:
        other = await uow.sessions.get("s-2")
    assert other is not None and (other.refresh_generation, other.refresh_hash) == (2, h3)


@on_the_fake_too
async def test_rolled_back_sessions_are_not_kept(units: Units) -> None:
    async with units() as uow:
        await uow.sessions.add(a_session(1, "u-1"))  # left without commit()
    async with units() as uow:
        assert await uow.sessions.get("s-1") is None


@on_the_fake_too
async def test_signed_in_only_through_a_live_session_of_ones_own(units: Units) -> None:
    user, other = a_user(1), a_user(2)
    async with units() as uow:
        await uow.users.add(user)
        await uow.users.add(other)
        await uow.sessions.add(a_session(1, user.id))
        await uow.sessions.add(a_session(2, other.id))
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get_signed_in(user.id, "s-1") == user
        assert await uow.users.get_signed_in(user.id, "s-2") is None  # someone else's session
        assert await uow.users.get_signed_in(user.id, "no-such-session") is None
        assert await uow.users.get_signed_in("nobody", "s-1") is None
        assert await uow.sessions.revoke("s-1", NOW, "logout")
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get_signed_in(user.id, "s-1") is None
        assert await uow.users.get_signed_in(other.id, "s-2") == other


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"])
async def test_the_migration_makes_a_session_of_every_refresh_token_family(
    backend: str, tmp_path: Path
) -> None:
    """Sessions signed in before the upgrade keep working: each family becomes a session, with
    its first token's time, and revoked if the family was."""
    url, admin = await asyncio.to_thread(create_database, backend, tmp_path, "0003")
    engine = sql.create_engine(url)
    naive = NOW.replace(tzinfo=None)  # as the columns hold UTC
    try:
        async with engine.begin() as conn:
            for n, family, revoked in ((1, "f-a", None), (2, "f-a", None), (3, "f-b", naive)):
                await conn.execute(
                    text(
                        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash,"
                        " created_at, expires_at, family_expires_at, revoked_at) VALUES (:id,"
                        " :family, 'u-1', :hash, :created, :created, :created, :revoked)"
                    ),
                    {
                        "id": f"t-{n}",
                        "family": family,
                        "hash": f"{n:064d}",
                        "created": naive + timedelta(seconds=n),
                        "revoked": revoked,
                    },
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            query = "SELECT id, user_id, amr, aal, revoked_reason FROM sessions ORDER BY id"
            rows = [tuple(r) for r in await conn.execute(text(query))]
        async with sql.SqlUnitOfWork(engine) as uow:
            kept = await uow.sessions.get("f-a")
    finally:
        await engine.dispose()
        await asyncio.to_thread(drop_database, url, admin)
    assert rows == [
        ("f-a", "u-1", '["pwd"]', 1, None),
        ("f-b", "u-1", '["pwd"]', 1, "revoked"),
    ]
    assert kept is not None
    first, last = NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)
    assert (kept.created_at, kept.last_used_at, kept.auth_time) == (first, last, first)


def _fields(session: SessionRecord) -> dict[str, object]:
    return {name: getattr(session, name) for name in SessionRecord.__dataclass_fields__}


@pytest.mark.parametrize("backend_database", ["postgres-asyncpg"], indirect=True, scope="session")
async def test_on_asyncpg_the_hot_reads_are_one_statement_each(units: Units) -> None:
    """Every authenticated request runs `get_signed_in`, every refresh `touch`: one round trip
    each, as the refresh-token family check and `users.get` were before sessions had rows."""
    user = a_user(1)
    async with units() as uow:
        await uow.users.add(user)
        await uow.sessions.add(a_session(1, user.id))
        await uow.commit()
    async with units() as uow:
        sent: list[str] = []
        run = uow.run  # type: ignore[attr-defined]

        async def counted(method: str, query: str, *args: object) -> object:
            sent.append(query)
            return await run(method, query, *args)

        uow.run = counted  # type: ignore[attr-defined]
        assert await uow.users.get_signed_in(user.id, "s-1") == user
        assert len(sent) == 1
        touched = await uow.sessions.touch("s-1", NOW + timedelta(minutes=1))
        assert touched is not None and touched[1] == user
        assert len(sent) == 2
        await uow.commit()


@on_the_fake_too
async def test_seen_since_tells_any_device_and_this_device_revoked_ones_too(
    units: Units,
) -> None:
    """The new-device check: used since `since` at all, and with this user agent (None a device
    of its own), counting revoked sessions; another user's sessions and older ones are not.
    (Compared as the database compares text: MariaDB's collation ignores case. A user agent is
    no secret, so a thief gains nothing there that copying it exactly would not give.)"""
    long_ago = NOW - timedelta(days=200)
    async with units() as uow:
        await uow.sessions.add(a_session(1, "u-1", user_agent="Firefox/1"))
        await uow.sessions.add(a_session(2, "u-1", user_agent=None))
        await uow.sessions.add(a_session(3, "u-1", user_agent="Old/1", last_used_at=long_ago))
        await uow.sessions.add(a_session(4, "u-2", user_agent="Theirs/1"))
        assert await uow.sessions.revoke("s-1", NOW, "logout") is True
        await uow.commit()
    since = NOW - timedelta(days=90)
    async with units() as uow:
        assert await uow.sessions.seen_since("u-1", "Firefox/1", since) == (True, True)
        assert await uow.sessions.seen_since("u-1", None, since) == (True, True)
        assert await uow.sessions.seen_since("u-1", "Old/1", since) == (True, False)
        assert await uow.sessions.seen_since("u-1", "Theirs/1", since) == (True, False)
        assert await uow.sessions.seen_since("u-3", None, since) == (False, False)
        assert await uow.sessions.seen_since("u-1", "Old/1", long_ago) == (True, True)
        later = NOW + timedelta(days=1)
        assert await uow.sessions.seen_since("u-1", "Firefox/1", later) == (False, False)
