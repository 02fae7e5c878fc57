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

# "postgres-asyncpg": the same PostgreSQL, with the flows' units of work on the asyncpg adapter
# (adapters/pg.py) instead of SQLAlchemy's.
BACKENDS = ["sqlite", "postgres", "mariadb", "postgres-asyncpg"]
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
    """(backend, url of its migrated database)."""
    url, admin = create_database(request.param, tmp_path_factory.mktemp(request.param))
    yield request.param, url
    drop_database(url, admin)


@pytest.fixture(scope="session")
def database_url(backend_database: tuple[str, str]) -> str:
    return backend_database[1]


@pytest.fixture
async def units(backend_database: tuple[str, str], engine: AsyncEngine) -> AsyncIterator[Units]:
    """New units of work on the backend, from the adapter that serves it."""
    backend, url = backend_database
    if backend == "postgres-asyncpg":
        database = PgDatabase(url, pool_size=5)
        yield database.uow
        await database.close()
    else:
        yield lambda: sql.SqlUnitOfWork(engine)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the backend's database, emptied before each test."""
    engine = sql.create_engine(database_url)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
    yield engine
    await engine.dispose()
