"""The audit trail for operators (docs/audit.md): the chainer the relay role runs, `gatehouse
audit verify|chain|prune|list` and `GET /api/admin/audit`.

Verification reads the head (where the chain ends now), then every record from the checkpoint
(or the first) to it in `seq` order, a batch at a time, and stops at the first place the chain
does not hold. `anchors` are `seq: hash` pairs an operator noted from an earlier run (the head it
printed): a chain rewritten since, even consistently, no longer holds them. Records not linked
yet are counted apart: they are protected from the moment the chainer links them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gatehouse.admin.pages import Page, decode, encode, limited
from gatehouse.domain.audit import GENESIS, SYSTEM, Break, ChainCheck, ChainHead, Checkpoint
from gatehouse.errors import InvalidInput
from gatehouse.ports.audit import AuditQuery, AuditStore
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext

BATCH = 1000
CHAIN_EVERY = 0.5  # seconds between the chainer's rounds while nothing waits
PRUNE_EVERY = 3600.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What verification found: the records checked, the head, the checkpoint it started
    from, the first break (None: the chain holds), and the records not linked yet (how many,
    since when)."""

    count: int
    head: ChainHead
    checkpoint: Checkpoint | None
    broken: Break | None
    waiting: int = 0
    waiting_since: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify(
    store: AuditStore, anchors: dict[int, str] | None = None, batch: int = BATCH
) -> Verdict:
    unlinked, since = await store.waiting()
    head = await store.head()
    checkpoint = await store.checkpoint()
    start = (
        ChainHead(0, GENESIS) if checkpoint is None else ChainHead(checkpoint.seq, checkpoint.hash)
    )
    check = ChainCheck(start)
    anchors = dict(anchors or {})
    after = start.seq
    while after < head.seq and check.broken is None:
        records = await store.scan(after, head.seq, batch)
        for found in records:
            if check.feed(found) is not None:
                break
            expected = anchors.pop(check.last.seq, None)
            if expected is not None and expected != found.hash:
                check.broken = Break(
                    check.last.seq, "anchor_mismatch", "not the hash noted for it (rewritten)"
                )
                break
        if not records:
            break
        after = check.last.seq
    broken = check.finish(head)
    if broken is None:
        broken = _unreached(anchors, start, head)
    return Verdict(check.count, head, checkpoint, broken, unlinked, since)


def _unreached(anchors: dict[int, str], start: ChainHead, head: ChainHead) -> Break | None:
    """Anchors not met among the records: the checkpoint's own, or ones past the head."""
    for seq, expected in sorted(anchors.items()):
        if seq == start.seq and expected == start.hash:
            continue
        if seq < start.seq:
            continue  # removed by retention: nothing left to compare
        return Break(seq, "anchor_mismatch", "no record with the hash noted for it")
    return None


async def prune(
    ctx: FlowContext,
    store: AuditStore,
    retention_days: int,
    *,
    actor: str = SYSTEM,
    actor_id: str | None = None,
    batch: int = BATCH,
) -> int:
    """Remove the records older than the retention (the checkpoint keeps the chain verifiable),
    and record that it was done. 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    now = ctx.clock()
    removed = await store.prune(now - timedelta(days=retention_days), now, batch)
    if removed:
        async with ctx.uow() as uow:
            reason = f"removed {removed} record(s) older than {retention_days} day(s)"
            record(ctx, uow, "audit.prune", actor=actor, actor_id=actor_id, reason=reason)
            await uow.commit()
    return removed


def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(
            f"Invalid {field}",
            errors=[{"field": field, "message": "an ISO 8601 time with its offset"}],
        )
    return moment


async def records(
    store: AuditStore,
    *,
    user_id: str | None = None,
    action: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Records newest first, filtered, a page at a time."""
    limit = limited(limit)
    before = decode(cursor).get("before")
    query = AuditQuery(
        user_id=user_id or None,
        action=action or None,
        since=_when(since, "since"),
        until=_when(until, "until"),
        before=before if isinstance(before, int) else None,
        limit=limit + 1,
    )
    found = await store.find(query)
    more = len(found) > limit
    page: list[dict[str, Any]] = [r.as_dict() for r in found[:limit]]
    return Page(page, encode({"before": found[limit - 1].id}) if more else None)


async def keep_chaining(
    ctx: FlowContext,
    store: AuditStore,
    retention_days: int,
    stop: asyncio.Event,
    every: float = CHAIN_EVERY,
    prune_every: float = PRUNE_EVERY,
) -> None:
    """The relay role's audit work until `stop`: link waiting records (at once while a full
    batch came, else every `every` seconds), and with a retention, `prune` hourly. Several
    relays may run it: chainers take turns at the head, and pruning is idempotent."""
    loop = asyncio.get_running_loop()
    next_prune = loop.time()
    while not stop.is_set():
        linked = 0
        try:
            linked = await store.chain(BATCH)
            if retention_days > 0 and loop.time() >= next_prune:
                next_prune = loop.time() + prune_every
                removed = await prune(ctx, store, retention_days)
                if removed:
                    log.info("audit retention removed %d record(s)", removed)
        except Exception as exc:  # the database away: the next round tries again
            log.warning("audit chainer: %r", exc)
        if linked < BATCH:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
