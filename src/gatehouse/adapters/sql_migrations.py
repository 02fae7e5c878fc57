"""Runs the packaged Alembic migrations on an engine, and reports whether the schema is at head."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "gatehouse:migrations")
    config.set_main_option("version_table", "alembic_version")
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


def _revisions(connection: Connection) -> dict[str, Any]:
    current = MigrationContext.configure(connection).get_current_heads()
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return {"current": sorted(current), "head": sorted(heads)}


async def revisions(engine: AsyncEngine) -> dict[str, Any]:
    """`{"current": [...], "head": [...]}` of the database and of the shipped migrations."""
    async with engine.connect() as conn:
        return await conn.run_sync(_revisions)
