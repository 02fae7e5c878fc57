"""What the tests of the one-statement paths share (`ports.rotation`, `ports.signup`): a clock the
test sets, and two flow contexts on one PostgreSQL database, as bootstrap wires it and without
the path under test, so that each case runs both ways and compares what they wrote."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.selfservice.context import FlowContext
from gatehouse.storage.migrate import upgrade

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Paths:
    services: Services
    clock: Clock
    at_once: FlowContext  # as bootstrap wires it on PostgreSQL
    ordinary: FlowContext  # the same, without the one-statement path

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.services.engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return [dict(row._mapping) for row in result]

    async def records(self, user_id: str) -> list[dict[str, Any]]:
        """`user_id`'s audit records in order, without ids or the chain's links."""
        return await self.rows(
            "SELECT at, actor, action, outcome, actor_id = user_id AS by_the_user, factor, "
            "detail, client_address FROM audit_log WHERE user_id = :u ORDER BY id",
            u=user_id,
        )


@asynccontextmanager
async def both_paths(
    postgres_database: str, tmp_path: Path, field: str, kind: type
) -> AsyncIterator[Paths]:
    """The two contexts: `field` of the flow context is the path, which bootstrap must have
    wired as a `kind` on PostgreSQL; the ordinary context has None there."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=postgres_database,
        secrets_file=tmp_path / "secrets.json",
        redis_url="",
        kafka_bootstrap_servers="",
        smtp_url="",
        rate_limits={},
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        hash_workers=1,
    )
    clock = Clock()
    services = build(settings, clock=clock)
    await upgrade(services.engine)
    try:
        assert isinstance(getattr(services.ctx, field), kind)  # bootstrap chose it
        ordinary = dataclasses.replace(services.ctx, **{field: None})
        yield Paths(services, clock, services.ctx, ordinary)
    finally:
        await services.aclose()


def batch_sizes(monkeypatch: Any, batches: Any) -> list[int]:
    """The size of each batch `batches` (a `storage.pg_batch.Batches`) runs from now on."""
    sizes: list[int] = []
    run = batches._run

    async def counted(items: list[Any]) -> Any:
        sizes.append(len(items))
        return await run(items)

    monkeypatch.setattr(batches, "_run", counted)
    return sizes
