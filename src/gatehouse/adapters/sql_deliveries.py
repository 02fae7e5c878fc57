"""The courier's delivery log in SQL: one row per message id, each outcome written in the same
transaction as the outbox event that reports it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.adapters.sql import SqlOutbox, _unavailable
from gatehouse.adapters.sql_schema import deliveries
from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import Unavailable
from gatehouse.ports import DeliveryRecord


class SqlDeliveryLog:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except Exception as exc:
            if _unavailable(exc):
                raise Unavailable("Database unavailable") from exc
            raise

    async def get(self, message_id: str) -> DeliveryRecord | None:
        async with self._transaction() as conn:
            query = select(deliveries).where(deliveries.c.id == message_id)
            row = (await conn.execute(query)).first()
        return None if row is None else DeliveryRecord(**row._mapping)

    async def record(
        self,
        message_id: str,
        status: str,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
    ) -> None:
        values = {
            "status": status,
            "channel": channel,
            "attempts": attempts,
            "last_error": error[:200] if error else None,
            "updated_at": now,
        }
        async with self._transaction() as conn:
            # Update-else-insert works alike on the three dialects; one courier owns a message
            # at a time (its Kafka partition), so the two statements do not race in practice.
            changed = await conn.execute(
                update(deliveries).where(deliveries.c.id == message_id).values(values)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(deliveries).values(id=message_id, created_at=now, **values)
                )
            if event is not None:
                await SqlOutbox(conn).add(event)
