"""Databases for the contract tests: a fresh, migrated database per backend for the session. And
what several suites share: the delivery log, its outbox and its row count on each backend (the
delivery log suites); an outbox of user events on SQLite (the relay on Kafka); a job's final
state (the suites on the real queues)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gatehouse.bootstrap import Services
from gatehouse.domain import events
from gatehouse.domain.events import OutboxMessage
from gatehouse.outbox.relay import Relay
from gatehouse.ports import DeliveryLog, Jobs, JobState, OutboxRecord, OutboxStore, UnitOfWork
from gatehouse.selfservice.registration import flow as registration
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.pg import PgDatabase
from gatehouse.storage.schema import deliveries, metadata
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from gatehouse.storage.sql_outbox import SqlOutboxStore
from tests.conftest import service_env, unique
from tests.fakes import MemoryDatabase, MemoryDeliveryLog, MemoryOutboxStore

# "postgres-asyncpg": the same PostgreSQL, with the flows' units of work on the asyncpg adapter
# (storage/pg.py) instead of SQLAlchemy's.
BACKENDS = ["sqlite", "postgres", "mariadb", "postgres-asyncpg"]
# Not a database: the `MemoryDatabase` test double (tests/fakes.py) that stands in for SQL in the
# unit suite. test_sql_contract.py runs its tests of the ports on it too, so that it cannot drift
# from the real thing; its SQL-only tests (and every other module) run on BACKENDS alone.
FAKE = "fake"
Units = Callable[[], UnitOfWork]
OutboxStores = Callable[[], OutboxStore]


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _migrate(url: str, revision: str) -> None:
    engine = sql.create_engine(url)
    try:
        await upgrade(engine, revision)
    finally:
        await engine.dispose()


def create_database(
    backend: str, tmp: Path, revision: str | None = "head"
) -> tuple[str, str | None]:
    """(url of a new empty database migrated to `revision` (None: not at all), admin url to drop
    it with or None)."""
    admin: str | None = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / unique('contract')}.db"
    else:
        admin = service_env("MARIADB_URL" if backend == "mariadb" else "POSTGRES_URL")
        name = unique("gh_test")
        asyncio.run(_admin(admin, f"CREATE DATABASE {name}"))
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    if revision is not None:
        asyncio.run(_migrate(url, revision))
    return url, admin


def drop_database(url: str, admin: str | None) -> None:
    if admin is not None:
        name = make_url(url).database
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture(scope="session", params=BACKENDS)
def backend_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(backend, url of its migrated database); the fake has none ("")."""
    if request.param == FAKE:
        yield FAKE, ""
        return
    url, admin = create_database(request.param, tmp_path_factory.mktemp(request.param))
    yield request.param, url
    drop_database(url, admin)


@pytest.fixture(scope="session")
def database_url(backend_database: tuple[str, str]) -> str:
    return backend_database[1]


@pytest.fixture
def units(backend_database: tuple[str, str], request: pytest.FixtureRequest) -> Units:
    """New units of work on the backend (emptied first), from the adapter that serves it; on the
    fake, on a `MemoryDatabase` of the test's own (`fake_database`)."""
    backend, _url = backend_database
    if backend == FAKE:
        database: MemoryDatabase = request.getfixturevalue("fake_database")
        return database.uow
    if backend == "postgres-asyncpg":
        pg_units: Units = request.getfixturevalue("pg_units")
        return pg_units
    engine: AsyncEngine = request.getfixturevalue("engine")
    return lambda: sql.SqlUnitOfWork(engine)


@pytest.fixture
def fake_database() -> MemoryDatabase:
    return MemoryDatabase()


@pytest.fixture
async def pg_units(database_url: str, engine: AsyncEngine) -> AsyncIterator[Units]:
    """Units of work on the asyncpg adapter (`engine` empties the tables first)."""
    database = PgDatabase(database_url, pool_size=5)
    yield database.uow
    await database.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the backend's database, emptied before each test."""
    engine = sql.create_engine(database_url)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
    yield engine
    await engine.dispose()


# Ends every other connection of ours to the test database, as an operator's restart would.
# Ours only: an autovacuum worker on the same database is a superuser's, and a role that is
# not one may not end it (CI met one: "must be a superuser to terminate superuser process").
CUT_OUR_CONNECTIONS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND usename = current_user "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


# --- the delivery log suites (test_deliveries_sql.py, test_delivery_leases_sql.py) -------------

NOW = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)
# A test of the port: on every SQL backend and on the fake.
on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)
RowCount = Callable[[], Awaitable[int]]


@pytest.fixture
def log(backend_database: tuple[str, str], request: pytest.FixtureRequest) -> DeliveryLog:
    """The delivery log on the backend (emptied first); on the fake, over the test's own
    `MemoryDatabase`, whose outbox takes the events."""
    if backend_database[0] == FAKE:
        database: MemoryDatabase = request.getfixturevalue("fake_database")
        return MemoryDeliveryLog(database)
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlDeliveryLog(engine)


@pytest.fixture
async def outbox_stores(
    backend_database: tuple[str, str], units: Units, request: pytest.FixtureRequest
) -> AsyncIterator[OutboxStores]:
    """New relay-side outbox stores over the same data as `units` (on "postgres-asyncpg" with
    the asyncpg pool, as the relay has them there). `units` first: it made the engine or the
    fake, which an async fixture cannot make from inside its event loop."""
    backend, url = backend_database
    if backend == FAKE:
        database: MemoryDatabase = request.getfixturevalue("fake_database")
        yield lambda: MemoryOutboxStore(database, lambda: NOW)
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    pg = PgDatabase(url, pool_size=5) if backend == "postgres-asyncpg" else None
    yield lambda: SqlOutboxStore(engine, lambda: NOW, pg)
    if pg is not None:
        await pg.close()


@pytest.fixture
def outbox_store(backend_database: tuple[str, str], request: pytest.FixtureRequest) -> OutboxStore:
    """The relay's side of the outbox the log writes its events to."""
    if backend_database[0] == FAKE:
        database: MemoryDatabase = request.getfixturevalue("fake_database")
        return MemoryOutboxStore(database, lambda: NOW)
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlOutboxStore(engine, lambda: NOW)


@pytest.fixture
def delivery_rows(log: DeliveryLog, request: pytest.FixtureRequest) -> RowCount:
    """How many records the log holds, whatever their ids: the port cannot list them."""
    if isinstance(log, MemoryDeliveryLog):
        fake = log

        async def in_the_dict() -> int:
            return len(fake.records)

        return in_the_dict
    engine: AsyncEngine = request.getfixturevalue("engine")

    async def in_the_table() -> int:
        async with engine.connect() as conn:
            query = select(func.count()).select_from(deliveries)
            return int((await conn.execute(query)).scalar_one())

    return in_the_table


async def published(store: OutboxStore) -> list[OutboxMessage]:
    """Every unpublished event, in order, as the relay would publish it (marked published)."""
    taken: list[OutboxRecord] = []

    async def publish(records: Sequence[OutboxRecord]) -> None:
        taken.extend(records)

    await store.claim(1000, publish)
    return [r.message for r in taken]


# --- the relay on Kafka (test_kafka_relay_courier.py, test_kafka_compression.py) -------------


async def outbox_of_logins(
    path: Path, topic: str, count: int
) -> tuple[AsyncEngine, list[OutboxMessage]]:
    """A new, migrated SQLite database at `path` whose outbox holds `count` LOGGED_IN events on
    `topic`, of user-0, user-1 and user-2 in turn, with data {"n": 0}, {"n": 1}, ...: its engine
    (to dispose of) and the events, in the order written."""
    engine = sql.create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    now = datetime.now(UTC)
    written: list[OutboxMessage] = []
    async with sql.SqlUnitOfWork(engine) as uow:
        for i in range(count):
            event = events.user_event(events.LOGGED_IN, f"user-{i % 3}", {"n": i}, now)
            written.append(OutboxMessage(event.id, topic, event.key, event.payload, now))
            await uow.outbox.add(written[-1])
        await uow.commit()
    return engine, written


# --- the queues ---------------------------------------------------------------------------------


async def finished(jobs: Jobs, queue: str, job_id: str) -> JobState:
    """The job's state once it has completed or failed (30 s at the most)."""
    async with asyncio.timeout(30):
        while True:
            state = await jobs.get(queue, job_id)
            if state is not None and state.state in ("completed", "failed"):
                return state
            await asyncio.sleep(0.02)


async def verified_user(
    services: Services, prefix: str, password: str, phone: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A user signed up through the flows on embedded-bus services: registered, its code read
    from the outbox the relay published, verified. Returns the email and the user."""
    ctx = services.ctx
    email = f"{unique(prefix)}@example.com"
    await registration.register(ctx, name="Ada", email=email, password=password, phone=phone)
    relay = Relay(
        services.outbox_store, services.publisher, batch=500, interval=0.01, clock=ctx.clock
    )
    await relay.run_once()
    assert services.bus is not None
    commands = [json.loads(r.value) for r in services.bus.published]
    [code] = [
        ctx.keyring.decrypt(c["code_ciphertext"], events.code_context(c["id"]))
        for c in commands
        if c.get("to") == email and c.get("code_ciphertext")
    ]
    return email, await registration.verify(ctx, email=email, otp=code)
