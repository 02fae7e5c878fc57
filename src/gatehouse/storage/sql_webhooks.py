"""Webhook endpoints and deliveries in SQL (SQLAlchemy Core, on every database). A user's
deliveries to an endpoint go out one after another: one is due only once the one before it in
that chain is settled (delivered or failed). The delivery loop makes one transaction a round
(`settle_and_claim`): the outcomes of its finished posts in one UPDATE, then what is due leased a
batch at a time (FOR UPDATE SKIP LOCKED on PostgreSQL so that processes pass each other, and one
conditional UPDATE: of two processes, one wins a row)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.domain.webhooks import FAILED, MAX_ERROR, PENDING, Endpoint, WebhookDelivery
from gatehouse.errors import Unavailable
from gatehouse.ports.webhooks import Outcome
from gatehouse.storage.schema import UTCDateTime, webhook_deliveries, webhooks
from gatehouse.storage.sql import _unavailable

w, d = webhooks.c, webhook_deliveries.c
FIELDS = tuple(c.name for c in webhook_deliveries.columns)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _settled_values(outcomes: Sequence[tuple[str, Outcome]]) -> dict[str, Any]:
    """The columns an attempt writes, each a CASE on the delivery's id: one UPDATE for all."""
    time_type = UTCDateTime()

    def by_id(pick: Callable[[Outcome], Any], kind: Any) -> Any:
        return case({i: literal(pick(o), kind) for i, o in outcomes}, value=d.id)

    return {
        "status": by_id(lambda o: o.status, String()),
        "attempts": by_id(lambda o: o.attempts, Integer()),
        "last_status_code": by_id(lambda o: o.attempt.status_code, Integer()),
        "last_error": by_id(
            lambda o: o.attempt.error[:MAX_ERROR] if o.attempt.error else None, String()
        ),
        "duration_ms": by_id(lambda o: o.attempt.duration_ms, Integer()),
        "updated_at": by_id(lambda o: o.now, time_type),
        "next_attempt_at": by_id(lambda o: o.next_attempt_at, time_type),
        "expires_at": by_id(lambda o: o.expires_at, time_type),
        "delivered_at": by_id(lambda o: o.now if o.attempt.ok else None, time_type),
        "lease_owner": None,
        "lease_until": None,
    }


# Leased deliveries, and the endpoints they go to that the caller has no current copy of.
Claimed = tuple[list[WebhookDelivery], list[Endpoint]]


def _endpoint(row: Any) -> Endpoint:
    values = dict(row._mapping)
    values["events"] = tuple(json.loads(values["events"]))
    values["paused"] = bool(values["paused"])
    return Endpoint(**values)


def _endpoint_row(endpoint: Endpoint) -> dict[str, Any]:
    return {**asdict(endpoint), "events": json.dumps(list(endpoint.events))}


def _delivery(row: Any) -> WebhookDelivery:
    values = row._mapping
    return WebhookDelivery(**{name: values[name] for name in FIELDS})


class SqlWebhookStore:
    """`ports.webhooks.WebhookStore` on an engine."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        # A delivery is due only after the one before it in its chain (same endpoint and user)
        # is settled: that one row, found by the chain index, whatever the chain's history.
        earlier = webhook_deliveries.alias("earlier")
        e = earlier.c
        before = (
            select(e.status)
            .where(e.webhook_id == d.webhook_id, e.user_key == d.user_key, e.seq < d.seq)
            .order_by(e.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        self._head = func.coalesce(before, "") != PENDING
        # The endpoint, row by row (a join would have the planner sort every due row).
        self._paused = select(w.paused).where(w.id == d.webhook_id).scalar_subquery()
        self._version = select(w.updated_at).where(w.id == d.webhook_id).scalar_subquery()
        active = select(func.count()).where(w.paused.is_(False)).scalar_subquery()
        self._active = active.label("active")

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

    def _due(
        self, now: datetime, limit: int, busy: Collection[str], *, light: bool = False
    ) -> Select[Any]:
        """Heads of chains whose time has come, not leased, of endpoints neither paused nor
        `busy`, oldest first; `light`: only which ones, their endpoint's `updated_at` (is a
        cached copy current?) and how many endpoints are not paused."""
        columns = (d.seq, d.webhook_id, self._version.label("version"), self._active)
        query = (
            select(*columns if light else (webhook_deliveries,))
            .where(
                d.status == PENDING,
                d.next_attempt_at <= now,
                or_(d.lease_until.is_(None), d.lease_until <= now),
                self._paused.is_(False),
                self._head,
            )
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        if busy:
            query = query.where(d.webhook_id.not_in(list(busy)))
        return query

    async def claim_due(
        self,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        room: Mapping[str, int],
        default_room: int,
        known: Mapping[str, datetime],
    ) -> Claimed:
        """Lease up to `limit` due deliveries, at most `room` (else `default_room`) of an
        endpoint; with them, the endpoints not in `known` at their current `updated_at` (a
        changed URL, secret or filter is seen at once)."""
        _, claimed, endpoints = await self.settle_and_claim(
            owner, (), now, until, limit, room, default_room, known
        )
        return claimed, endpoints

    async def finish_many(self, owner: str, outcomes: Sequence[tuple[str, Outcome]]) -> list[bool]:
        """Each attempt's outcome written (its lease freed) while `owner` holds the delivery."""
        written, _, _ = await self.settle_and_claim(owner, outcomes, _EPOCH, _EPOCH, 0, {}, 0, {})
        return written

    async def settle_and_claim(
        self,
        owner: str,
        outcomes: Sequence[tuple[str, Outcome]],
        now: datetime,
        until: datetime,
        limit: int,
        room: Mapping[str, int],
        default_room: int,
        known: Mapping[str, datetime],
    ) -> tuple[list[bool], list[WebhookDelivery], list[Endpoint]]:
        """One transaction: the outcomes written (which ones were: the lease still `owner`'s),
        then what is due leased (`claim_due`), the next one of a chain just settled included."""
        async with self._transaction() as conn:
            written = await self._settle(conn, owner, outcomes)
            if limit <= 0:
                return written, [], []
            claimed, endpoints = await self._claim(
                conn, owner, now, until, limit, room, default_room, known
            )
        return written, claimed, endpoints

    async def _settle(
        self, conn: AsyncConnection, owner: str, outcomes: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        """Attempts' outcomes, in one UPDATE, where the lease is still `owner`'s: which ones
        were written (RETURNING; else the rows are locked and read first)."""
        if not outcomes:
            return []
        ids = [delivery_id for delivery_id, _ in outcomes]
        mine = and_(d.id.in_(ids), d.status == PENDING, d.lease_owner == owner)
        write = update(webhook_deliveries).values(_settled_values(outcomes))
        if self._engine.dialect.update_returning:
            done = set((await conn.execute(write.where(mine).returning(d.id))).scalars())
        else:
            done = set((await conn.execute(select(d.id).where(mine).with_for_update())).scalars())
            if done:
                await conn.execute(write.where(d.id.in_(sorted(done))))
        return [delivery_id in done for delivery_id in ids]

    async def _claim(
        self,
        conn: AsyncConnection,
        owner: str,
        now: datetime,
        until: datetime,
        limit: int,
        room: Mapping[str, int],
        default_room: int,
        known: Mapping[str, datetime],
    ) -> Claimed:
        """Candidates read oldest first (FOR UPDATE SKIP LOCKED on PostgreSQL, so that another
        process takes others meanwhile), chosen within each endpoint's room, leased by one
        conditional UPDATE (of several processes, one wins each row). When endpoints reached
        their room before the read ran out, it is made again without them: however many of
        its deliveries are due, a dead endpoint's backlog hides no other endpoint's."""
        busy = {webhook for webhook, free in room.items() if free <= 0}
        taken: Counter[str] = Counter()
        claimed: list[WebhookDelivery] = []
        versions: dict[str, datetime] = {}
        while len(claimed) < limit:
            window = min((limit - len(claimed)) * 2, 500)
            query = self._due(now, window, busy, light=True)
            if self._engine.dialect.name == "postgresql":
                query = query.with_for_update(of=webhook_deliveries, skip_locked=True)
            rows, chosen = (await conn.execute(query)).all(), list[int]()
            for row in rows:
                if len(claimed) + len(chosen) < limit and row.webhook_id not in busy:
                    taken[row.webhook_id] += 1
                    chosen.append(row.seq)
                    versions[row.webhook_id] = row.version
                    if taken[row.webhook_id] >= room.get(row.webhook_id, default_room):
                        busy.add(row.webhook_id)
            if chosen:
                claimed += await self._lease(conn, chosen, owner, now, until)
            if len(rows) < window or len(chosen) == len(rows) or len(busy) >= rows[0].active:
                break  # every due one seen, none passed over, or no endpoint left with room
        stale = {x.webhook_id for x in claimed if known.get(x.webhook_id) != versions[x.webhook_id]}
        endpoints = []
        if stale:
            fresh = select(webhooks).where(w.id.in_(sorted(stale)))
            endpoints = [_endpoint(r) for r in await conn.execute(fresh)]
        return sorted(claimed, key=lambda x: x.seq), endpoints

    async def _lease(
        self, conn: AsyncConnection, seqs: list[int], owner: str, now: datetime, until: datetime
    ) -> list[WebhookDelivery]:
        lease = (
            update(webhook_deliveries)
            .where(
                d.seq.in_(seqs),
                d.status == PENDING,
                or_(d.lease_until.is_(None), d.lease_until <= now),
            )
            .values(lease_owner=owner, lease_until=until, updated_at=now)
        )
        if self._engine.dialect.update_returning:
            return [
                _delivery(r) for r in await conn.execute(lease.returning(*webhook_deliveries.c))
            ]
        await conn.execute(lease)
        mine = d.seq.in_(seqs), d.lease_owner == owner, d.lease_until == until
        return [_delivery(r) for r in await conn.execute(select(webhook_deliveries).where(*mine))]

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
