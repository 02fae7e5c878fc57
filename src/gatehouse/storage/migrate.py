"""Runs the packaged Alembic migrations on an engine, and reports whether the schema is at head
and has every table and column the code expects (seed 004's Mysql_Structure check)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.errors import Unavailable
from gatehouse.ports import SchemaReport
from gatehouse.storage.schema import metadata
from gatehouse.storage.sql import _unavailable

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: 12 MB that an api worker (migrated by its supervisor,
# or by `gatehouse migrate`) would otherwise hold for nothing.


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "gatehouse.storage:migrations")
    config.set_main_option("version_table", "alembic_version")
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    from alembic import command

    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


@cache
def code_heads() -> tuple[str, ...]:
    """The head revision(s) of the shipped migrations (read once: they do not change)."""
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _revisions(connection: Connection) -> dict[str, Any]:
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(connection).get_current_heads()
    return {"current": sorted(current), "head": list(code_heads())}


async def revisions(engine: AsyncEngine) -> dict[str, Any]:
    """`{"current": [...], "head": [...]}` of the database and of the shipped migrations."""
    async with engine.connect() as conn:
        return await conn.run_sync(_revisions)


def _report(connection: Connection) -> SchemaReport:
    found = _revisions(connection)
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    missing_tables: list[str] = []
    missing_columns: list[str] = []
    # Compared with the metadata, not with the migrations: a migration that forgot a column
    # (or a hand-edited database at the right revision) shows up here.
    for table in metadata.sorted_tables:
        if table.name not in present:
            missing_tables.append(table.name)
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        missing_columns += [
            f"{table.name}.{c.name}" for c in table.columns if c.name not in columns
        ]
    return SchemaReport(
        found["current"], found["head"], sorted(missing_tables), sorted(missing_columns)
    )


async def schema_report(engine: AsyncEngine) -> SchemaReport:
    """The database's migration revision against the code's head, and the tables and columns of
    `sql_schema.metadata` the database lacks, on PostgreSQL, MariaDB/MySQL or SQLite."""
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_report)
    except Exception as exc:
        if _unavailable(exc):
            raise Unavailable("Database unavailable") from exc
        raise


class SqlSchema:
    """`ports.DatabaseSchema` on an engine: migrations and the schema check. With `owns_engine`
    (a command that made an engine for this alone) closing it disposes the engine."""

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False):
        self._engine = engine
        self._owns_engine = owns_engine

    async def upgrade(self, revision: str = "head") -> None:
        await upgrade(self._engine, revision)

    async def revisions(self) -> dict[str, Any]:
        return await revisions(self._engine)

    async def report(self) -> SchemaReport:
        return await schema_report(self._engine)

    async def aclose(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()
