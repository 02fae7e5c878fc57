"""The audit trail on SQLAlchemy (SQLite, MariaDB/MySQL, PostgreSQL): a unit of work's records,
written as it commits (one insert: no lock shared between units); the chainer, which links
waiting records into the chain; the operators' side (read, scan, prune); and the admin search
of users by email prefix.

The chainer takes the chain's head row first with an UPDATE: on PostgreSQL and MariaDB that
locks the row until its transaction ends, and on SQLite it takes the database's write lock (a
plain SELECT first would run outside any transaction under pysqlite, and two chainers could
read the same head). Chainers therefore take turns and the chain never forks; each batch is one
transaction, so one commit links many records."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.domain.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    ChainHead,
    Checkpoint,
    chain,
)
from gatehouse.domain.users import User
from gatehouse.ports.audit import AuditQuery
from gatehouse.storage.schema import audit_checkpoint, audit_head, audit_log, users

if TYPE_CHECKING:
    from gatehouse.storage.sql import Executor

HEAD = audit_head.c.id == 1
LINKED = audit_log.c.seq.is_not(None)
_LINK = (
    update(audit_log)
    .where(audit_log.c.id == bindparam("record_id"))
    .values(seq=bindparam("new_seq"), prev_hash=bindparam("new_prev"), hash=bindparam("new_hash"))
)

# PostgreSQL links a batch in one statement, its links as four arrays: the per-row UPDATEs of
# `_LINK` (executemany) were, with their parameters, most of the chainer's work, which runs in
# the relay role beside the outbox (a third of that process's CPU under verify-otp load).
_LINK_ALL = text(
    "UPDATE audit_log AS a SET seq = v.seq, prev_hash = v.prev, hash = v.hash "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), "
    "CAST(:prevs AS varchar[]), CAST(:hashes AS varchar[])) AS v(id, seq, prev, hash) "
    "WHERE a.id = v.id"
)

_ANY_WAITING = select(audit_log.c.id).where(audit_log.c.seq.is_(None)).limit(1)


def _record(row: Any) -> AuditRecord:
    return AuditRecord(**row._mapping)


async def append(conn: Executor, entries: list[AuditEntry]) -> None:
    """Write `entries`, waiting to be linked, in the caller's transaction."""
    if entries:
        await conn.execute(insert(audit_log).values([asdict(e) for e in entries]))


async def _tail(conn: Any) -> ChainHead:
    """The chain's end read from the records themselves (or the checkpoint): for a head row
    that is missing (a wiped table); verification reports it."""
    newest = (
        select(audit_log.c.seq, audit_log.c.hash).where(LINKED).order_by(audit_log.c.seq.desc())
    )
    for query in (newest.limit(1), select(audit_checkpoint.c.seq, audit_checkpoint.c.hash)):
        row = (await conn.execute(query)).first()
        if row is not None:
            return ChainHead(int(row._mapping["seq"]), str(row._mapping["hash"]))
    return ChainHead(0, GENESIS)


class SqlAuditTrail:
    """A unit of work's staged records (see `ports.audit.AuditTrail`)."""

    def __init__(self, conn: Executor):
        self._conn = conn
        self._staged: list[AuditEntry] = []
        self._kept: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> None:
        self._staged.append(entry)

    def keep(self, entry: AuditEntry) -> None:
        self._staged.append(entry)
        self._kept.append(entry)

    async def flush(self) -> None:
        """Before the commit: every staged record."""
        staged, self._staged, self._kept = self._staged, [], []
        await append(self._conn, staged)

    def refusals(self) -> list[AuditEntry]:
        """After a rollback: the refusals, to write on their own (and nothing else)."""
        kept, self._staged, self._kept = self._kept, [], []
        return kept


async def _link(conn: Any, linked: list[AuditRecord]) -> None:
    """Write the links `chain` gave the records."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _LINK_ALL,
            {
                "ids": [r.id for r in linked],
                "seqs": [r.seq for r in linked],
                "prevs": [r.prev_hash for r in linked],
                "hashes": [r.hash for r in linked],
            },
        )
        return
    await conn.execute(
        _LINK,
        [
            {"record_id": r.id, "new_seq": r.seq, "new_prev": r.prev_hash, "new_hash": r.hash}
            for r in linked
        ],
    )


class SqlAuditStore:
    """The operators' side of the chain, on the service's engine."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def chain(self, limit: int) -> int:
        async with self._engine.connect() as conn:  # nothing waiting: no write, no lock
            if (await conn.execute(_ANY_WAITING)).first() is None:
                return 0
        async with self._engine.begin() as conn:
            # The lock first (SQLite: the write lock), then the head as it now is.
            await conn.execute(update(audit_head).where(HEAD).values(seq=audit_head.c.seq))
            query = select(audit_head.c.seq, audit_head.c.hash).where(HEAD).with_for_update()
            row = (await conn.execute(query)).first()
            if row is not None:
                head = ChainHead(int(row.seq), str(row.hash))
            else:
                head = await _tail(conn)
                await conn.execute(insert(audit_head).values(id=1, seq=head.seq, hash=head.hash))
            unlinked = (
                select(audit_log)
                .where(audit_log.c.seq.is_(None))
                .order_by(audit_log.c.id)
                .limit(limit)
            )
            linked = chain(head, [_record(r) for r in await conn.execute(unlinked)])
            if not linked:
                return 0
            await _link(conn, linked)
            end = linked[-1]
            await conn.execute(update(audit_head).where(HEAD).values(seq=end.seq, hash=end.hash))
        return len(linked)

    async def waiting(self) -> tuple[int, datetime | None]:
        query = select(func.count(), func.min(audit_log.c.at)).where(audit_log.c.seq.is_(None))
        async with self._engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), oldest

    async def find(self, query: AuditQuery) -> list[AuditRecord]:
        statement = select(audit_log).order_by(audit_log.c.id.desc()).limit(query.limit)
        if query.user_id is not None:
            statement = statement.where(audit_log.c.user_id == query.user_id)
        if query.action is not None:
            if query.action.endswith("*"):
                prefix = query.action[:-1]
                statement = statement.where(audit_log.c.action.startswith(prefix, autoescape=True))
            else:
                statement = statement.where(audit_log.c.action == query.action)
        if query.since is not None:
            statement = statement.where(audit_log.c.at >= query.since)
        if query.until is not None:
            statement = statement.where(audit_log.c.at < query.until)
        if query.before is not None:
            statement = statement.where(audit_log.c.id < query.before)
        async with self._engine.connect() as conn:
            return [_record(row) for row in await conn.execute(statement)]

    async def scan(self, after: int, through: int, limit: int) -> list[AuditRecord]:
        statement = (
            select(audit_log)
            .where(audit_log.c.seq > after, audit_log.c.seq <= through)
            .order_by(audit_log.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_record(row) for row in await conn.execute(statement)]

    async def head(self) -> ChainHead:
        async with self._engine.connect() as conn:
            query = select(audit_head.c.seq, audit_head.c.hash).where(HEAD)
            row = (await conn.execute(query)).first()
            if row is None:
                return await _tail(conn)
            return ChainHead(int(row.seq), str(row.hash))

    async def checkpoint(self) -> Checkpoint | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(audit_checkpoint))).first()
        if row is None:
            return None
        return Checkpoint(int(row.seq), str(row.hash), row.at, int(row.removed))

    async def prune(self, before: datetime, now: datetime, batch: int) -> int:
        async with self._engine.connect() as conn:
            newer = select(func.min(audit_log.c.seq)).where(LINKED, audit_log.c.at >= before)
            first_kept = (await conn.execute(newer)).scalar()
            last = first_kept - 1 if first_kept is not None else (await _tail(conn)).seq
        removed = 0
        while True:
            async with self._engine.begin() as conn:
                count = await self._prune_batch(conn, last, batch, now)
            removed += count
            if count < batch:
                return removed

    @staticmethod
    async def _prune_batch(conn: Any, last: int, batch: int, now: datetime) -> int:
        """Up to `batch` of the oldest records through `last`, and the checkpoint moved."""
        oldest = (
            select(audit_log.c.seq, audit_log.c.hash)
            .where(LINKED, audit_log.c.seq <= last)
            .order_by(audit_log.c.seq)
            .limit(batch)
        )
        rows = (await conn.execute(oldest)).all()
        if not rows:
            return 0
        end_seq, end_hash = int(rows[-1][0]), str(rows[-1][1])
        removal = delete(audit_log).where(LINKED, audit_log.c.seq <= end_seq)
        gone = (await conn.execute(removal)).rowcount
        if not gone:  # another prune took them meanwhile
            return 0
        counted = audit_checkpoint.c.removed + gone
        moved = await conn.execute(
            update(audit_checkpoint)
            .where(audit_checkpoint.c.id == 1)
            .values(seq=end_seq, hash=end_hash, at=now, removed=counted)
        )
        if moved.rowcount == 0:
            values = {"seq": end_seq, "hash": end_hash, "at": now, "removed": gone}
            await conn.execute(insert(audit_checkpoint).values(id=1, **values))
        return len(rows)


class SqlUserDirectory:
    """The admin search of accounts by email prefix, on the service's engine."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def by_email_prefix(self, prefix: str, after: str | None, limit: int) -> list[User]:
        statement = select(users).order_by(users.c.email).limit(limit)
        if prefix:
            statement = statement.where(users.c.email.startswith(prefix, autoescape=True))
        if after is not None:
            statement = statement.where(users.c.email > after)
        async with self._engine.connect() as conn:
            return [User(**row._mapping) for row in await conn.execute(statement)]
