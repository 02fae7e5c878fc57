"""Webhook endpoints and deliveries in SQL (SQLAlchemy Core, on every database): leases taken by
conditional UPDATEs, as the courier's delivery log does; a user's deliveries to an endpoint go
out one after another (the oldest pending one of a chain is the only one due)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.domain.webhooks import FAILED, PENDING, Endpoint, WebhookDelivery
from gatehouse.errors import Unavailable
from gatehouse.ports.webhooks import Outcome
from gatehouse.storage.schema import webhook_deliveries, webhooks
from gatehouse.storage.sql import _unavailable

w, d = webhooks.c, webhook_deliveries.c


def _endpoint(row: Any) -> Endpoint:
    values = dict(row._mapping)
    values["events"] = tuple(json.loads(values["events"]))
    values["paused"] = bool(values["paused"])
    return Endpoint(**values)


def _endpoint_row(endpoint: Endpoint) -> dict[str, Any]:
    return {**asdict(endpoint), "events": json.dumps(list(endpoint.events))}


def _delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(**row._mapping)


class SqlWebhookStore:
    """`ports.webhooks.WebhookStore` on an engine."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        earlier = webhook_deliveries.alias("earlier")
        e = earlier.c
        self._before = exists().where(
            e.webhook_id == d.webhook_id,
            e.user_key == d.user_key,
            e.status == PENDING,
            e.seq < d.seq,
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

    async def add(self, endpoint: Endpoint) -> None:
        async with self._transaction() as conn:
            await conn.execute(insert(webhooks), _endpoint_row(endpoint))

    async def get(self, webhook_id: str) -> Endpoint | None:
        async with self._transaction() as conn:
            row = (await conn.execute(select(webhooks).where(w.id == webhook_id))).first()
        return None if row is None else _endpoint(row)

    async def page(self, after: str | None, limit: int) -> list[Endpoint]:
        query = select(webhooks).order_by(w.id).limit(limit)
        if after is not None:
            query = query.where(w.id > after)
        async with self._transaction() as conn:
            return [_endpoint(r) for r in await conn.execute(query)]

    async def active(self) -> list[Endpoint]:
        async with self._transaction() as conn:
            return [_endpoint(r) for r in await conn.execute(select(webhooks))]

    async def update(self, endpoint: Endpoint) -> bool:
        values = _endpoint_row(endpoint)
        del values["id"], values["created_at"]
        async with self._transaction() as conn:
            done = await conn.execute(update(webhooks).where(w.id == endpoint.id).values(values))
        return done.rowcount == 1

    async def delete(self, webhook_id: str) -> bool:
        async with self._transaction() as conn:
            await conn.execute(delete(webhook_deliveries).where(d.webhook_id == webhook_id))
            done = await conn.execute(delete(webhooks).where(w.id == webhook_id))
        return done.rowcount == 1

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> int:
        """In one transaction when none is there yet (the usual case); else one at a time, each
        insert that meets its unique pair skipped (an event read again after a crash)."""
        rows = [{k: v for k, v in asdict(x).items() if k != "seq"} for x in deliveries]
        if not rows:
            return 0
        with contextlib.suppress(IntegrityError):
            async with self._transaction() as conn:
                await conn.execute(insert(webhook_deliveries), rows)
            return len(rows)
        added = 0
        for row in rows:
            with contextlib.suppress(IntegrityError):
                async with self._transaction() as conn:
                    await conn.execute(insert(webhook_deliveries), row)
                added += 1
        return added

    async def due(
        self, now: datetime, limit: int, busy: Collection[str] = ()
    ) -> list[WebhookDelivery]:
        query = (
            select(webhook_deliveries)
            .join(webhooks, w.id == d.webhook_id)
            .where(
                d.status == PENDING,
                d.next_attempt_at <= now,
                or_(d.lease_until.is_(None), d.lease_until <= now),
                w.paused.is_(False),
                ~self._before,
            )
            .order_by(d.next_attempt_at, d.seq)
            .limit(limit)
        )
        if busy:
            query = query.where(d.webhook_id.not_in(list(busy)))
        async with self._transaction() as conn:
            return [_delivery(r) for r in await conn.execute(query)]

    async def claim(self, delivery_id: str, owner: str, now: datetime, until: datetime) -> bool:
        statement = (
            update(webhook_deliveries)
            .where(
                d.id == delivery_id,
                d.status == PENDING,
                or_(d.lease_until.is_(None), d.lease_until <= now, d.lease_owner == owner),
            )
            .values(lease_owner=owner, lease_until=until, updated_at=now)
        )
        async with self._transaction() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def finish(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        attempt = outcome.attempt
        values: dict[str, Any] = {
            "status": outcome.status,
            "attempts": outcome.attempts,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error[:200] if attempt.error else None,
            "duration_ms": attempt.duration_ms,
            "updated_at": outcome.now,
            "next_attempt_at": outcome.next_attempt_at,
            "expires_at": outcome.expires_at,
            "lease_owner": None,
            "lease_until": None,
        }
        if outcome.status != PENDING and attempt.ok:
            values["delivered_at"] = outcome.now
        statement = (
            update(webhook_deliveries)
            .where(d.id == delivery_id, d.status == PENDING, d.lease_owner == owner)
            .values(values)
        )
        async with self._transaction() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def release(self, delivery_id: str, owner: str) -> None:
        statement = (
            update(webhook_deliveries)
            .where(d.id == delivery_id, d.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        async with self._transaction() as conn:
            await conn.execute(statement)

    async def deliveries(
        self, webhook_id: str, status: str | None, after: int | None, limit: int
    ) -> list[WebhookDelivery]:
        query = select(webhook_deliveries).where(d.webhook_id == webhook_id)
        if status is not None:
            query = query.where(d.status == status)
        if after is not None:
            query = query.where(d.seq < after)
        query = query.order_by(d.seq.desc()).limit(limit)
        async with self._transaction() as conn:
            return [_delivery(r) for r in await conn.execute(query)]

    async def get_delivery(self, webhook_id: str, delivery_id: str) -> WebhookDelivery | None:
        query = select(webhook_deliveries).where(d.webhook_id == webhook_id, d.id == delivery_id)
        async with self._transaction() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _delivery(row)

    async def redeliver(
        self, webhook_id: str, now: datetime, *, delivery_id: str | None, since: datetime | None
    ) -> int:
        which = and_(d.webhook_id == webhook_id, d.status == FAILED)
        if delivery_id is not None:
            which = and_(which, d.id == delivery_id)
        if since is not None:
            which = and_(which, d.created_at >= since)
        statement = (
            update(webhook_deliveries)
            .where(which)
            .values(
                status=PENDING,
                next_attempt_at=now,
                expires_at=None,
                updated_at=now,
                lease_owner=None,
                lease_until=None,
            )
        )
        async with self._transaction() as conn:
            return (await conn.execute(statement)).rowcount
