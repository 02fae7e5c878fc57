"""Test doubles of the audit chain's store (the chainer and the operators' side) and of the admin
search of users, over a `MemoryDatabase` (tests/fakes.py), whose units of work write the
records. They run the same contract as SQL in tests/integration/test_audit_sql.py (`[fake]`)."""

from __future__ import annotations

from datetime import datetime

from gatehouse.domain.audit import GENESIS, AuditRecord, ChainHead, Checkpoint, chain
from gatehouse.domain.users import User
from gatehouse.ports.audit import AuditQuery
from tests.fakes import MemoryDatabase


class MemoryAuditStore:
    def __init__(self, db: MemoryDatabase):
        self._db = db

    @property
    def _records(self) -> list[AuditRecord]:
        return self._db.tables.audit

    @property
    def _linked(self) -> list[AuditRecord]:
        return sorted((r for r in self._records if r.seq is not None), key=lambda r: r.seq or 0)

    async def chain(self, limit: int) -> int:
        async with self._db.lock:
            unlinked = sorted((r for r in self._records if r.seq is None), key=lambda r: r.id)
            linked = chain(await self.head(), unlinked[:limit])
            by_id = {r.id: r for r in linked}
            self._records[:] = [by_id.get(r.id, r) for r in self._records]
            if linked:
                end = linked[-1]
                assert end.seq is not None and end.hash is not None
                self._db.tables.audit_meta["head"] = ChainHead(end.seq, end.hash)
            return len(linked)

    async def waiting(self) -> tuple[int, datetime | None]:
        unlinked = [r for r in self._records if r.seq is None]
        return len(unlinked), min((r.at for r in unlinked), default=None)

    async def find(self, query: AuditQuery) -> list[AuditRecord]:
        def wanted(r: AuditRecord) -> bool:
            action = query.action
            return (
                (query.user_id is None or r.user_id == query.user_id)
                and (
                    action is None
                    or (
                        r.action.startswith(action[:-1])
                        if action.endswith("*")
                        else r.action == action
                    )
                )
                and (query.since is None or r.at >= query.since)
                and (query.until is None or r.at < query.until)
                and (query.before is None or r.id < query.before)
            )

        found = sorted((r for r in self._records if wanted(r)), key=lambda r: -r.id)
        return found[: query.limit]

    async def scan(self, after: int, through: int, limit: int) -> list[AuditRecord]:
        return [r for r in self._linked if after < (r.seq or 0) <= through][:limit]

    async def head(self) -> ChainHead:
        head: ChainHead | None = self._db.tables.audit_meta.get("head")
        return head or ChainHead(0, GENESIS)

    async def checkpoint(self) -> Checkpoint | None:
        found: Checkpoint | None = self._db.tables.audit_meta.get("checkpoint")
        return found

    async def prune(self, before: datetime, now: datetime, batch: int) -> int:
        async with self._db.lock:
            gone: list[AuditRecord] = []
            for r in self._linked:
                if r.at >= before:
                    break
                gone.append(r)
            if not gone:
                return 0
            removed_ids = {r.id for r in gone}
            self._records[:] = [r for r in self._records if r.id not in removed_ids]
            previous = await self.checkpoint()
            removed = len(gone) + (previous.removed if previous else 0)
            end = gone[-1]
            assert end.seq is not None and end.hash is not None
            self._db.tables.audit_meta["checkpoint"] = Checkpoint(end.seq, end.hash, now, removed)
            return len(gone)


class MemoryUserDirectory:
    def __init__(self, db: MemoryDatabase):
        self._db = db

    async def by_email_prefix(self, prefix: str, after: str | None, limit: int) -> list[User]:
        found = sorted(
            (
                u
                for u in self._db.tables.users.values()
                if u.email.startswith(prefix) and (after is None or u.email > after)
            ),
            key=lambda u: u.email,
        )
        return found[:limit]
