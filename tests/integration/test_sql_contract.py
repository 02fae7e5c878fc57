"""The storage contract, run on SQLite, PostgreSQL and MariaDB alike (and PostgreSQL again through
the asyncpg adapter). The tests written against the ports (`UnitOfWork` and its repositories,
`OutboxStore`) also run on the `MemoryDatabase` fake of the unit suite (`[fake]`), so the double
the flows' unit tests trust behaves as SQL does; the rest (migrations, read-only units, outages,
connections cut) are SQL's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.domain import events
from gatehouse.domain.tokens import RefreshToken
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import Conflict, Unavailable
from gatehouse.ports import OutboxRecord, OutboxStore
from gatehouse.storage import sql
from gatehouse.storage.migrate import revisions
from gatehouse.storage.pg import PgDatabase, dsn
from gatehouse.storage.schema import metadata
from tests.integration.conftest import (
    BACKENDS,
    CUT_OUR_CONNECTIONS,
    FAKE,
    OutboxStores,
    Units,
    create_database,
    drop_database,
)

NOW = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)
# A test of the ports: on every SQL backend and on the fake.
on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)


def a_user(n: int = 1, **changes: object) -> User:
    user = User(
        id=f"00000000-0000-0000-0000-{n:012d}",
        email=f"user{n}@example.com",
        name=f"User {n}",
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        created_at=NOW,
        updated_at=NOW,
        phone_ciphertext=None,
        phone_index=None,
    )
    return user.with_changes(**changes)


async def test_migrations_at_head_with_every_table_and_column(engine: AsyncEngine) -> None:
    state = await revisions(engine)
    assert state["current"] == state["head"] and state["head"]

    def columns(conn: object) -> dict[str, set[str]]:
        inspector = inspect(conn)
        return {
            t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
        }

    async with engine.connect() as conn:
        found = await conn.run_sync(columns)
    for table in metadata.sorted_tables:
        assert {c.name for c in table.columns} <= found[table.name], table.name


@on_the_fake_too
async def test_users_round_trip_with_aware_microsecond_times(units: Units) -> None:
    user = a_user(phone_ciphertext="v1.k.abc", phone_index="f" * 64, image="https://x/y.png")
    async with units() as uow:
        await uow.users.add(user)
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get(user.id) == user
        assert await uow.users.get_by_email(user.email) == user
        assert await uow.users.get_by_phone_index("f" * 64) == user
        assert await uow.users.get_by_email("nobody@example.com") is None
        assert await uow.users.get_by_phone_index("e" * 64) is None
    changed = user.with_changes(name="Renamed", updated_at=NOW + timedelta(seconds=1))
    async with units() as uow:
        await uow.users.update(changed)
        await uow.commit()
    async with units() as uow:
        stored = await uow.users.get(user.id)
    assert stored == changed and stored is not None and stored.updated_at.tzinfo is not None
    async with units() as uow:
        await uow.users.delete(user.id)
        await uow.users.delete("nobody")
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get(user.id) is None
        await uow.users.update(a_user(9))  # no such user: nothing to update, nothing added
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get(a_user(9).id) is None


@on_the_fake_too
@pytest.mark.parametrize("clash", ["id", "email", "phone_index"])
async def test_duplicate_id_email_or_phone_is_a_conflict(units: Units, clash: str) -> None:
    first = a_user(1, phone_index="a" * 64)
    second = a_user(2, phone_index="b" * 64).with_changes(**{clash: getattr(first, clash)})
    async with units() as uow:
        await uow.users.add(first)
        await uow.commit()
    with pytest.raises(Conflict):
        async with units() as uow:
            await uow.users.add(second)
            await uow.commit()
    async with units() as uow:
        assert await uow.users.get(first.id) == first
        if clash != "id":
            assert await uow.users.get(second.id) is None


@on_the_fake_too
async def test_changing_to_a_taken_email_or_phone_is_a_conflict(units: Units) -> None:
    first, second = a_user(1, phone_index="a" * 64), a_user(2, phone_index="b" * 64)
    async with units() as uow:
        await uow.users.add(first)
        await uow.users.add(second)
        await uow.commit()
    for clash in ("email", "phone_index"):
        with pytest.raises(Conflict):
            async with units() as uow:
                await uow.users.update(second.with_changes(**{clash: getattr(first, clash)}))
                await uow.commit()
    async with units() as uow:
        assert await uow.users.get(second.id) == second


@on_the_fake_too
async def test_uncommitted_work_is_rolled_back(units: Units, outbox_stores: OutboxStores) -> None:
    with pytest.raises(RuntimeError):
        async with units() as uow:
            await uow.users.add(a_user())
            await uow.outbox.add(events.user_event(events.VERIFIED, a_user().id, {}, NOW))
            raise RuntimeError("boom")
    async with units() as uow:
        await uow.users.add(a_user(2))  # left without commit(): rolled back too
    async with units() as uow:
        assert await uow.users.get(a_user().id) is None
        assert await uow.users.get(a_user(2).id) is None
    assert await outbox_stores().pending_count() == 0


@on_the_fake_too
async def test_pending_registration_is_replaced_for_the_same_email(units: Units) -> None:
    def pending(n: int, name: str) -> PendingRegistration:
        return PendingRegistration(
            id=f"p-{n}",
            email="p@example.com",
            name=name,
            password_hash="h",
            created_at=NOW,
            expires_at=NOW + timedelta(days=1),
        )

    for n, name in ((1, "First"), (2, "Second")):
        async with units() as uow:
            await uow.pending.put(pending(n, name))
            await uow.commit()
    async with units() as uow:
        assert await uow.pending.get_by_email("p@example.com") == pending(2, "Second")
        await uow.pending.delete("p-1")  # the replaced one: already gone
        await uow.commit()
    async with units() as uow:
        assert await uow.pending.get_by_email("p@example.com") == pending(2, "Second")
        await uow.pending.delete("p-2")
        await uow.commit()
    async with units() as uow:
        assert await uow.pending.get_by_email("p@example.com") is None


@on_the_fake_too
async def test_refresh_tokens_single_use_and_revocation(units: Units) -> None:
    def token(n: int, family: str) -> RefreshToken:
        return RefreshToken(
            id=f"t-{n}",
            family_id=family,
            user_id="u-1",
            token_hash=f"{n:064d}",
            created_at=NOW,
            expires_at=NOW + timedelta(days=1),
            family_expires_at=NOW + timedelta(days=2),
        )

    async with units() as uow:
        for n, family in ((1, "f-a"), (2, "f-a"), (3, "f-b")):
            await uow.refresh_tokens.add(token(n, family))
        await uow.commit()
    async with units() as uow:
        assert await uow.refresh_tokens.mark_used("t-1", NOW) is True
        assert await uow.refresh_tokens.mark_used("t-1", NOW) is False
        assert await uow.refresh_tokens.mark_used("no-such-token", NOW) is False
        assert await uow.refresh_tokens.get_by_hash("9" * 64) is None
        assert await uow.refresh_tokens.revoke_family("f-a", NOW) == 2
        assert await uow.refresh_tokens.revoke_family("f-a", NOW) == 0
        assert await uow.refresh_tokens.revoke_user("u-1", NOW) == 1
        await uow.commit()
    async with units() as uow:
        stored = await uow.refresh_tokens.get_by_hash(f"{1:064d}")
    assert stored is not None and stored.used_at == NOW and stored.revoked_at == NOW


@on_the_fake_too
async def test_outbox_claims_in_order_and_marks_published(
    units: Units, outbox_stores: OutboxStores
) -> None:
    messages = [events.user_event(events.VERIFIED, f"u-{i}", {"n": i}, NOW) for i in range(7)]
    async with units() as uow:
        for message in messages:
            await uow.outbox.add(message)
        await uow.commit()
    store = outbox_stores()
    seen: list[OutboxRecord] = []

    async def failing(records: Sequence[OutboxRecord]) -> None:
        raise ConnectionError("kafka down")

    with pytest.raises(ConnectionError):
        await store.claim(5, failing)
    assert await store.pending_count() == 7  # nothing marked when publishing failed

    async def collect(records: Sequence[OutboxRecord]) -> None:
        seen.extend(records)

    assert await store.claim(5, collect) == 5
    assert await store.claim(5, collect) == 2
    assert await store.claim(5, collect) == 0
    assert [r.message.id for r in seen] == [m.id for m in messages]
    assert seen[3].message.payload == messages[3].payload
    assert await store.pending_count() == 0
    assert await store.prune(NOW) == 0  # published at NOW: not older than NOW
    assert await store.prune(NOW + timedelta(seconds=1)) == 7


@on_the_fake_too
async def test_two_relays_never_publish_a_row_twice(
    units: Units, outbox_stores: OutboxStores
) -> None:
    async with units() as uow:
        for i in range(60):
            await uow.outbox.add(events.user_event(events.VERIFIED, f"u-{i % 3}", {"n": i}, NOW))
        await uow.commit()
    store_a, store_b = outbox_stores(), outbox_stores()
    published: list[int] = []

    async def slow(records: Sequence[OutboxRecord]) -> None:
        await asyncio.sleep(0.01)
        published.extend(r.message.payload["data"]["n"] for r in records)

    async def drain(store: OutboxStore) -> None:
        while await store.claim(7, slow):
            pass

    await asyncio.gather(drain(store_a), drain(store_b))
    assert sorted(published) == list(range(60))
    assert published == list(range(60))  # and in order, so each user's events stay ordered


async def test_unreachable_database_is_unavailable(
    backend_database: tuple[str, str],
) -> None:
    backend, database_url = backend_database
    if database_url.startswith("sqlite"):
        url = "sqlite+aiosqlite:////nonexistent-dir/x.db"
    else:
        from sqlalchemy.engine import make_url

        from tests.conftest import free_port

        url = make_url(database_url).set(port=free_port()).render_as_string(hide_password=False)
    engine = sql.create_engine(url)
    native = PgDatabase(url, pool_size=1)
    new_uow = native.uow if backend == "postgres-asyncpg" else lambda: sql.SqlUnitOfWork(engine)
    try:
        with pytest.raises(Unavailable):
            async with new_uow() as uow:
                await uow.users.get("x")
    finally:
        await engine.dispose()
        await native.close()


@on_the_fake_too
async def test_encrypted_not_under_finds_old_key_prefixes_oldest_first(units: Units) -> None:
    old = [
        a_user(i, phone_ciphertext=f"v1.old.{i}", created_at=NOW + timedelta(seconds=i))
        for i in (3, 1, 2)
    ]
    new = a_user(4, phone_ciphertext="v1.new.4")
    async with units() as uow:
        for user in [*old, new, a_user(5)]:
            await uow.users.add(user)
        await uow.commit()
    async with units() as uow:
        found = await uow.users.encrypted_not_under("v1.new.", 2)
    assert [u.id for u in found] == [a_user(1).id, a_user(2).id]


async def test_read_only_units_read_but_cannot_commit(
    backend_database: tuple[str, str], engine: AsyncEngine, units: Units
) -> None:
    backend, url = backend_database
    async with units() as uow:
        await uow.users.add(a_user())
        await uow.commit()
    native = PgDatabase(url, pool_size=1)
    reading = sql.autocommit(engine)
    reader = (
        native.reader
        if backend == "postgres-asyncpg"
        else (lambda: sql.SqlUnitOfWork(reading, read_only=True))
    )
    try:
        async with reader() as uow:
            assert await uow.users.get(a_user().id) == a_user()
            with pytest.raises(RuntimeError, match="read-only"):
                await uow.commit()
    finally:
        await native.close()


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, admin = create_database("postgres", tmp_path_factory.mktemp("cut"))
    yield url
    drop_database(url, admin)


@pytest.mark.parametrize("adapter", ["sqlalchemy", "asyncpg"])
async def test_a_connection_cut_while_idle_costs_no_unit_of_work(
    postgres_url: str, adapter: str
) -> None:
    """Without pre-ping, the first statement of a unit finds the dead pooled connection and the
    unit carries on on a new one: nothing fails. (Cut with PostgreSQL's pg_terminate_backend.)"""
    url = postgres_url
    engine = sql.create_engine(url)
    native = PgDatabase(url, pool_size=5)
    units = native.uow if adapter == "asyncpg" else lambda: sql.SqlUnitOfWork(engine)
    try:
        await _cut_while_idle(url, units)
    finally:
        await engine.dispose()
        await native.close()


async def test_many_units_at_once_share_the_pools_connections_and_none_is_lost(
    postgres_url: str,
) -> None:
    """30 units at once on a pool of 2 (storage/pg_pool.py): all finish, some with a statement
    that fails, one cancelled while it waits for a connection and one mid-statement; the
    server saw 2 connections of ours in all, and both are back in the pool at the end."""
    native = PgDatabase(postgres_url, pool_size=2)
    backends: set[int] = set()

    async def unit(i: int, pause: float = 0.01) -> int:
        async with native.reader() as uow:
            backends.add(await uow.run("fetchval", "SELECT pg_backend_pid()"))
            if i % 7 == 3:  # a statement that fails: the connection is still good
                with contextlib.suppress(asyncpg.PostgresError):
                    await uow.run("execute", "SELECT 1/0")
            await uow.run("execute", "SELECT pg_sleep($1)", pause)
        return i

    try:
        mid_statement = asyncio.create_task(unit(-1, pause=5))
        busy = asyncio.create_task(unit(-2, pause=0.3))
        while native.pool.open < 2 or len(backends) < 2:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(unit(-3))
        await asyncio.sleep(0.05)
        waiting.cancel()
        mid_statement.cancel()
        done = await asyncio.gather(*(unit(i) for i in range(30)))
        assert done == list(range(30)) and await busy == -2
        for cancelled in (waiting, mid_statement):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        # The one cut mid-statement was closed, not pooled: one new connection replaced it.
        assert len(backends) == 3
        assert native.pool.open == native.pool.idle <= 2  # every one given back
    finally:
        await native.close()
        # The one cut mid-statement still sleeps on the server (a backend notices its client
        # left only when it answers): ended here, so that the next test counts only its own.
        done_with = await asyncpg.connect(dsn(postgres_url))
        try:
            await done_with.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1)",
                list(backends),
            )
        finally:
            await done_with.close()


async def _cut_while_idle(url: str, units: Units) -> None:
    async with units() as uow:
        await uow.users.delete(a_user().id)
        await uow.users.add(a_user())
        await uow.commit()
    async with units() as uow:  # the pool now holds a used connection
        assert await uow.users.get(a_user().id) is not None
    assert await _cut_connections(url) > 0
    await asyncio.sleep(0.2)
    for _ in range(3):
        async with units() as uow:
            assert await uow.users.get(a_user().id) == a_user()
        async with units() as uow:
            await uow.outbox.add(events.user_event(events.VERIFIED, a_user().id, {}, NOW))
            await uow.commit()


async def _cut_connections(url: str) -> int:
    """Ends every other connection to the database, as PostgreSQL's operator would."""
    admin = sql.create_engine(url)
    try:
        async with admin.connect() as conn:
            killed = await conn.execute(text(CUT_OUR_CONNECTIONS))
            return int(killed.scalar_one())
    finally:
        await admin.dispose()


@pytest.mark.parametrize("read_after", [0.0, 0.2])
async def test_asyncpg_connection_cut_inside_a_unit_is_unavailable_and_frees_its_place(
    postgres_url: str, read_after: float
) -> None:
    """Cut between two statements of a unit: the second fails as Unavailable (a 503), whether
    asyncpg has read the socket's end yet (0.2 s) or only the server's FATAL message (at once,
    which leaves its protocol in an error state); and the pool's one place is free again."""
    native = PgDatabase(postgres_url, pool_size=1)
    try:
        async with native.uow() as uow:
            await uow.users.delete(a_user().id)
            await uow.users.add(a_user())
            await uow.commit()
        with pytest.raises(Unavailable):
            async with native.uow() as uow:
                await uow.users.get(a_user().id)
                assert await _cut_connections(postgres_url) == 1
                await asyncio.sleep(read_after)
                await uow.users.update(replace(a_user(), name="never written"))
                await uow.commit()
        for _ in range(2):
            async with native.reader() as uow:
                assert await uow.users.get(a_user().id) == a_user()
    finally:
        await native.close()
