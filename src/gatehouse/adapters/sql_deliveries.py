"""The courier's delivery log in SQL: one row per message id, leased to one courier at a time by
conditional statements (the database is the arbiter between couriers), each outcome written in
the same transaction as the outbox event that reports it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.adapters.sql import SqlOutbox, _unavailable
from gatehouse.adapters.sql_schema import deliveries
from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import Unavailable
from gatehouse.ports import FINAL, QUEUED, SENDING, Claim, DeliveryRecord

c = deliveries.c


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

    @staticmethod
    async def _get(conn: AsyncConnection, message_id: str) -> DeliveryRecord | None:
        row = (await conn.execute(select(deliveries).where(c.id == message_id))).first()
        return None if row is None else DeliveryRecord(**row._mapping)

    async def get(self, message_id: str) -> DeliveryRecord | None:
        async with self._transaction() as conn:
            return await self._get(conn, message_id)

    async def claim(self, message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        held = {"status": SENDING, "lease_owner": owner, "lease_until": until, "updated_at": now}
        # One UPDATE decides between couriers: under concurrency PostgreSQL and InnoDB re-check
        # the WHERE on the row's latest version once the first writer commits, and SQLite has one
        # writer at a time, so a lease just taken is live for the next claimant and it loses.
        takeable = and_(
            c.id == message_id,
            or_(
                c.status == QUEUED,
                and_(
                    c.status == SENDING,
                    or_(c.lease_until.is_(None), c.lease_until <= now, c.lease_owner == owner),
                ),
            ),
        )
        for _ in range(2):
            async with self._transaction() as conn:
                won = (await conn.execute(update(deliveries).where(takeable).values(held))).rowcount
                record = await self._get(conn, message_id)
            if record is not None:
                return Claim(won == 1, record)
            # Never seen: the primary key lets one INSERT through; the others fail and read
            # the winner's row on the second pass.
            try:
                async with self._transaction() as conn:
                    await conn.execute(
                        insert(deliveries).values(
                            id=message_id,
                            channel=None,
                            attempts=0,
                            last_error=None,
                            created_at=now,
                            **held,
                        )
                    )
                    record = await self._get(conn, message_id)
                assert record is not None
                return Claim(True, record)
            except IntegrityError:
                continue
        raise AssertionError("a delivery row that is neither readable nor insertable")

    async def release(self, message_id: str, owner: str, now: datetime) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                update(deliveries)
                .where(c.id == message_id, c.status == SENDING, c.lease_owner == owner)
                .values(status=QUEUED, lease_owner=None, lease_until=None, updated_at=now)
            )

    async def record(
        self,
        message_id: str,
        status: str,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
        owner: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {
            "status": status,
            "channel": channel,
            "attempts": attempts,
            "last_error": error[:200] if error else None,
            "updated_at": now,
        }
        where = [c.id == message_id, c.status.not_in(FINAL)]
        if status in FINAL:
            values.update(lease_owner=None, lease_until=None)
        elif owner is not None:
            where.append(c.lease_owner == owner)
        async with self._transaction() as conn:
            # MariaDB's rowcount counts matched rows (SQLAlchemy sets FOUND_ROWS), so an update
            # that changes nothing still finds its row on the three databases.
            changed = await conn.execute(update(deliveries).where(*where).values(values))
            if changed.rowcount == 0:
                if await self._get(conn, message_id) is not None:
                    return False  # final already, or someone else's lease
                await conn.execute(
                    insert(deliveries).values(id=message_id, created_at=now, **values)
                )
            if event is not None:
                await SqlOutbox(conn).add(event)
        return True
