"""The audit trail's storage on SQLite, PostgreSQL (SQLAlchemy and asyncpg), MariaDB and, where the
fake agrees, the unit suite's `MemoryDatabase`: records written as their unit commits (and
refusals kept when it rolls back), linked by the chainer in the order written, concurrent writers
and chainers that never fork the chain, the operators' reads (filters, pages, scans), retention
with its checkpoint; and `users.disabled_at`: a disabled account is signed in nowhere, and the
admin search escapes LIKE's wildcards."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.admin import audit as admin_audit
from gatehouse.domain.audit import GENESIS, AuditEntry, AuditRecord, ChainHead, entry
from gatehouse.domain.sessions import SessionRecord
from gatehouse.ports.audit import AuditQuery, AuditStore, UserDirectory
from gatehouse.storage.schema import audit_head
from gatehouse.storage.sql_audit import SqlAuditStore, SqlUserDirectory
from tests.fakes import MemoryDatabase
from tests.fakes_audit import MemoryAuditStore, MemoryUserDirectory
from tests.integration.conftest import BACKENDS, FAKE, Units
from tests.integration.test_sql_contract import NOW, a_user

on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)


@pytest.fixture
def store(backend_database: tuple[str, str], request: pytest.FixtureRequest) -> AuditStore:
    if backend_database[0] == FAKE:
        return MemoryAuditStore(request.getfixturevalue("fake_database"))
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlAuditStore(engine)


@pytest.fixture
def directory(backend_database: tuple[str, str], request: pytest.FixtureRequest) -> UserDirectory:
    if backend_database[0] == FAKE:
        database: MemoryDatabase = request.getfixturevalue("fake_database")
        return MemoryUserDirectory(database)
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlUserDirectory(engine)


def an_entry(n: int, **changes: object) -> AuditEntry:
    fields: dict[str, object] = {
        "action": "login",
        "outcome": "success",
        "user_id": f"user-{n % 3}",
        "factor": "password",
        "detail": f"détail {n}",
        "client_address": "2001:db8::1",
    }
    return entry(NOW + timedelta(seconds=n), **{**fields, **changes})  # type: ignore[arg-type]


@on_the_fake_too
async def test_records_chain_as_their_unit_commits_and_refusals_survive_a_rollback(
    units: Units, store: AuditStore
) -> None:
    async with units() as uow:
        uow.audit.add(an_entry(1))
        uow.audit.add(an_entry(2, actor="admin", actor_id="cli:root"))
        await uow.commit()
    async with units() as uow:
        uow.audit.add(an_entry(3))  # rolled back with its unit
        uow.audit.keep(an_entry(4, outcome="failure", detail="wrong_password"))
    assert await store.scan(0, 100, 100) == []  # written, not linked yet
    assert await store.waiting() == (3, NOW + timedelta(seconds=1))
    assert await store.chain(2) == 2 and await store.chain(100) == 1
    assert await store.chain(100) == 0 and await store.waiting() == (0, None)
    found = await store.scan(0, 100, 100)
    assert [(r.seq, r.outcome) for r in found] == [(1, "success"), (2, "success"), (3, "failure")]
    first = found[0]
    assert first.at == NOW + timedelta(seconds=1) and first.at.tzinfo is not None
    assert (first.detail, first.client_address, first.actor) == ("détail 1", "2001:db8::1", "user")
    assert found[1].actor_id == "cli:root"
    assert found[0].prev_hash == GENESIS and found[1].prev_hash == found[0].hash
    assert [r.id for r in found] == sorted(r.id for r in found)  # linked in the order written
    assert await store.head() == ChainHead(3, found[2].hash or "")
    verdict = await admin_audit.verify(store)
    assert verdict.ok and verdict.count == 3


@on_the_fake_too
async def test_concurrent_writers_and_chainers_never_fork_the_chain(
    units: Units, store: AuditStore
) -> None:
    async with units() as uow:  # the head row (emptied with the tables) comes back first
        uow.audit.add(an_entry(0))
        await uow.commit()
    assert await store.chain(10) == 1

    async def write(n: int) -> None:
        async with units() as uow:
            uow.audit.add(an_entry(n))
            await asyncio.sleep(0)  # let the others start their units
            if n % 4 == 0:
                uow.audit.add(an_entry(n, action="account.update"))
            await uow.commit()

    async def link(rounds: int) -> None:
        for _ in range(rounds):
            await store.chain(3)
            await asyncio.sleep(0)

    await asyncio.gather(*(write(n) for n in range(1, 25)), *(link(4) for _ in range(4)))
    while await store.chain(5):
        pass
    found = await store.scan(0, 1000, 1000)
    assert [r.seq for r in found] == list(range(1, 1 + 1 + 24 + 6))
    assert len({r.id for r in found}) == len(found)
    verdict = await admin_audit.verify(store, batch=7)  # several batches
    assert verdict.ok and verdict.count == len(found)


@on_the_fake_too
async def test_find_filters_and_pages_newest_first(units: Units, store: AuditStore) -> None:
    async with units() as uow:
        for n in range(1, 10):
            action = "login.mfa" if n % 2 else "refresh"
            uow.audit.add(an_entry(n, action=action))
        await uow.commit()
    everything = await store.find(AuditQuery(limit=100))
    assert [r.detail for r in everything] == [f"détail {n}" for n in range(9, 0, -1)]
    ids = {int(r.detail.split()[-1]): r.id for r in everything if r.detail}

    def found(records: list[AuditRecord]) -> list[int]:
        return [n for r in records for n, i in ids.items() if i == r.id]

    assert found(await store.find(AuditQuery(user_id="user-1", limit=100))) == [7, 4, 1]
    assert found(await store.find(AuditQuery(action="login*", limit=100))) == [9, 7, 5, 3, 1]
    assert await store.find(AuditQuery(action="login", limit=100)) == []
    window = AuditQuery(since=NOW + timedelta(seconds=3), until=NOW + timedelta(seconds=6))
    assert found(await store.find(window)) == [5, 4, 3]
    assert found(await store.find(AuditQuery(before=ids[4], limit=2))) == [3, 2]
    await store.chain(100)
    assert [r.seq for r in await store.scan(2, 5, 2)] == [3, 4]


@on_the_fake_too
async def test_retention_removes_the_oldest_and_verification_starts_at_its_checkpoint(
    units: Units, store: AuditStore
) -> None:
    async with units() as uow:
        for n in (1, 2, 3, 10, 4, 11):  # the 4th is younger than the 5th: removal stops at it
            uow.audit.add(an_entry(n))
        await uow.commit()
    await store.chain(100)
    cutoff = NOW + timedelta(seconds=5)
    assert await store.prune(cutoff, NOW + timedelta(days=1), batch=2) == 3
    checkpoint = await store.checkpoint()
    assert checkpoint is not None and (checkpoint.seq, checkpoint.removed) == (3, 3)
    assert [r.seq for r in await store.scan(0, 100, 100)] == [4, 5, 6]
    verdict = await admin_audit.verify(store)
    assert verdict.ok and verdict.count == 3 and verdict.checkpoint == checkpoint
    assert await store.prune(cutoff, NOW + timedelta(days=1), batch=2) == 0
    async with units() as uow:
        uow.audit.add(an_entry(20))
        await uow.commit()
    assert await store.prune(NOW + timedelta(days=9), NOW, batch=2) == 3  # the waiting one stays
    await store.chain(100)
    verdict = await admin_audit.verify(store)
    assert verdict.ok and verdict.count == 1


async def test_a_missing_head_row_is_rebuilt_from_the_records(
    units: Units, store: AuditStore, engine: AsyncEngine
) -> None:
    async with units() as uow:
        uow.audit.add(an_entry(1))
        await uow.commit()
    await store.chain(10)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_head))
    async with units() as uow:
        uow.audit.add(an_entry(2))
        await uow.commit()
    await store.chain(10)
    found = await store.scan(0, 10, 10)
    assert [r.seq for r in found] == [1, 2] and found[1].prev_hash == found[0].hash
    assert (await admin_audit.verify(store)).ok


@on_the_fake_too
async def test_a_disabled_account_is_signed_in_nowhere(units: Units) -> None:
    user = a_user(1)
    session = SessionRecord("s-1", user.id, NOW, NOW, NOW, "Firefox", ("pwd",), 1)
    async with units() as uow:
        await uow.users.add(user)
        await uow.sessions.add(session)
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get_signed_in(user.id, "s-1") == user
        await uow.users.update(user.with_changes(disabled_at=NOW))
        await uow.commit()
    async with units() as uow:
        stored = await uow.users.get(user.id)
        assert stored is not None and stored.disabled_at == NOW
        assert await uow.users.get_signed_in(user.id, "s-1") is None
        assert await uow.sessions.touch("s-1", NOW + timedelta(minutes=1)) is None
        assert (await uow.users.get_by_email(user.email)) == stored  # the email stays taken
    async with units() as uow:
        await uow.users.update(stored.with_changes(disabled_at=None))
        await uow.commit()
    async with units() as uow:
        assert await uow.sessions.touch("s-1", NOW + timedelta(minutes=2)) is not None


@on_the_fake_too
async def test_the_admin_search_pages_by_email_prefix_and_escapes_wildcards(
    units: Units, directory: UserDirectory
) -> None:
    async with units() as uow:
        for n, email in enumerate(
            ["a_b@example.com", "axb@example.com", "a%c@example.com", "ab@example.com"], start=1
        ):
            await uow.users.add(a_user(n, email=email))
        await uow.commit()
    assert [u.email for u in await directory.by_email_prefix("a_", None, 10)] == ["a_b@example.com"]
    assert [u.email for u in await directory.by_email_prefix("a%", None, 10)] == ["a%c@example.com"]
    # In the database's collation order (MariaDB's puts `_` before `%`): pages follow it.
    every = [u.email for u in await directory.by_email_prefix("a", None, 10)]
    assert sorted(every) == sorted(
        ["a_b@example.com", "axb@example.com", "a%c@example.com", "ab@example.com"]
    )
    page = await directory.by_email_prefix("a", None, 2)
    rest = await directory.by_email_prefix("a", page[-1].email, 10)
    assert [u.email for u in page + rest] == every
