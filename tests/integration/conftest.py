"""Databases for the contract tests: a fresh, migrated database per backend for the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gatehouse.ports import UnitOfWork
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.pg import PgDatabase
from gatehouse.storage.schema import metadata
from tests.conftest import service_env, unique
from tests.fakes import MemoryDatabase

# "postgres-asyncpg": the same PostgreSQL, with the flows' units of work on the asyncpg adapter
# (storage/pg.py) instead of SQLAlchemy's.
BACKENDS = ["sqlite", "postgres", "mariadb", "postgres-asyncpg"]
# Not a database: the `MemoryDatabase` test double (tests/fakes.py) that stands in for SQL in the
# unit suite. test_sql_contract.py runs its tests of the ports on it too, so that it cannot drift
# from the real thing; its SQL-only tests (and every other module) run on BACKENDS alone.
FAKE = "fake"
Units = Callable[[], UnitOfWork]


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
