"""The courier's delivery log in SQL: one row per message, leased by conditional statements."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.domain.events import OutboxMessage
from gatehouse.errors import Unavailable
from gatehouse.ports import FINAL, Claim, DeliveryRecord, Status
from gatehouse.storage.schema import deliveries
from gatehouse.storage.sql import SqlOutbox, _unavailable

c = deliveries.c
# The `status` column holds each `Status`'s string: written as such, read back as the member.
FINAL_VALUES = sorted(s.value for s in FINAL)


def _record(row: Any) -> DeliveryRecord:
    return DeliveryRecord(**{**row._mapping, "status": Status(row.status)})


def _row(record: DeliveryRecord) -> dict[str, Any]:
    return {**asdict(record), "status": record.status.value}


class SqlDeliveryLog:
    """The database is the arbiter between couriers, and each outcome is written in the same
    transaction as the outbox event that reports it.

    Its statements are built once, with parameters: a courier runs a claim and a record per
    message, and building them anew (values, coercions, cache keys) cost as much as running them.
    """

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        this = c.id == bindparam("mid")
        self._select = select(deliveries).where(this)
        self._insert = insert(deliveries)
        # One UPDATE decides between couriers: under concurrency PostgreSQL and InnoDB re-check
        # the WHERE on the row's latest version once the first writer commits, and SQLite has one
        # writer at a time, so a lease just taken is live for the next claimant and it loses.
        self._take = (
            update(deliveries)
            .where(
                this,
                or_(
                    c.status == Status.QUEUED.value,
                    and_(
                        c.status == Status.SENDING.value,
                        or_(
                            c.lease_until.is_(None),
                            c.lease_until <= bindparam("now"),
                            c.lease_owner == bindparam("owner"),
                        ),
                    ),
                ),
            )
            .values(
                status=Status.SENDING.value,
                lease_owner=bindparam("owner"),
                lease_until=bindparam("until"),
                updated_at=bindparam("now"),
            )
        )
        self._release = (
            update(deliveries)
            .where(this, c.status == Status.SENDING.value, c.lease_owner == bindparam("owner"))
            .values(
                status=Status.QUEUED.value,
                lease_owner=None,
                lease_until=None,
                updated_at=bindparam("now"),
            )
        )
        outcome: dict[str, Any] = {
            "status": bindparam("v_status"),
            "channel": bindparam("v_channel"),
            "attempts": bindparam("v_attempts"),
            "last_error": bindparam("v_error"),
            "updated_at": bindparam("now"),
        }
        unfinished = and_(this, c.status.not_in(FINAL_VALUES))
        self._finish = (
            update(deliveries)
            .where(unfinished)
            .values(**outcome, lease_owner=None, lease_until=None)
        )
        self._progress = update(deliveries).where(unfinished).values(**outcome)
        self._progress_held = (
            update(deliveries)
            .where(unfinished, c.lease_owner == bindparam("owner"))
            .values(**outcome)
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except Exception as exc:
            if _unavailable(exc):
                raise Unavailable("Database unavailable") from exc
            raise

    async def _get(self, conn: AsyncConnection, message_id: str) -> DeliveryRecord | None:
        row = (await conn.execute(self._select, {"mid": message_id})).first()
        return None if row is None else _record(row)

    async def get(self, message_id: str) -> DeliveryRecord | None:
        async with self._transaction() as conn:
            return await self._get(conn, message_id)

    async def claim(self, message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        # Most messages are new: one INSERT takes them, in one statement. The primary key lets
        # only one claimant's INSERT through; the others (and a redelivered message) go on to
        # the conditional UPDATE below.
        new = DeliveryRecord(message_id, Status.SENDING, None, 0, None, now, now, owner, until)
        with contextlib.suppress(IntegrityError):
            async with self._transaction() as conn:
                await conn.execute(self._insert, _row(new))
            return Claim(True, new)
        async with self._transaction() as conn:
            taken = await conn.execute(
                self._take, {"mid": message_id, "owner": owner, "until": until, "now": now}
            )
            record = await self._get(conn, message_id)
        if record is None:  # rows are never deleted: only a broken database gets here
            raise AssertionError("a delivery row that is neither readable nor insertable")
        return Claim(taken.rowcount == 1, record)

    async def release(self, message_id: str, owner: str, now: datetime) -> None:
        async with self._transaction() as conn:
            await conn.execute(self._release, {"mid": message_id, "owner": owner, "now": now})

    async def record(
        self,
        message_id: str,
        status: Status,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
        owner: str | None = None,
    ) -> bool:
        status = Status(status)  # a caller's plain string too, as the table stores one
        error = error[:200] if error else None
        params: dict[str, Any] = {
            "mid": message_id,
            "v_status": status.value,
            "v_channel": channel,
            "v_attempts": attempts,
            "v_error": error,
            "now": now,
        }
        if status in FINAL:
            statement = self._finish
        elif owner is not None:
            statement, params["owner"] = self._progress_held, owner
        else:
            statement = self._progress
        async with self._transaction() as conn:
            # MariaDB's rowcount counts matched rows (SQLAlchemy sets FOUND_ROWS), so an update
            # that changes nothing still finds its row on the three databases.
            changed = await conn.execute(statement, params)
            if changed.rowcount == 0:
                if await self._get(conn, message_id) is not None:
                    return False  # final already, or someone else's lease
                row = DeliveryRecord(message_id, status, channel, attempts, error, now, now)
                await conn.execute(self._insert, _row(row))
            if event is not None:
                await SqlOutbox(conn).add(event)
        return True
