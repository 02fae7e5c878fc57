"""A unit of work's audit records straight on asyncpg (`sql_audit.py`'s `SqlAuditTrail`): written
as the unit commits, in one INSERT, waiting for the chainer (`SqlAuditStore.chain`, the relay
role) to link them. No lock is shared with other units, so the records cost a request one round
trip, whatever the concurrency."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from gatehouse.domain.audit import AuditEntry

if TYPE_CHECKING:
    from gatehouse.storage.pg import PgUnitOfWork

NAMES = tuple(f.name for f in fields(AuditEntry))
_INSERTS: dict[int, str] = {}


def _insert(n: int) -> str:
    """The statement that writes `n` records (prepared once per `n` by asyncpg)."""
    if n not in _INSERTS:
        width = len(NAMES)
        rows = ", ".join(
            "(" + ", ".join(f"${r * width + i}" for i in range(1, width + 1)) + ")"
            for r in range(n)
        )
        _INSERTS[n] = f"INSERT INTO audit_log ({', '.join(NAMES)}) VALUES {rows}"  # noqa: S608
    return _INSERTS[n]


def record_args(entries: list[AuditEntry]) -> list[Any]:
    return [
        v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v
        for e in entries
        # Not `astuple`: it deep-copies every value (4 % of a refresh's CPU in the api).
        for v in (getattr(e, name) for name in NAMES)
    ]


class PgAuditTrail:
    """A unit of work's staged records (see `ports.audit.AuditTrail`)."""

    def __init__(self, uow: PgUnitOfWork):
        self._uow = uow
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
        if staged:
            await self._uow.run("execute", _insert(len(staged)), *record_args(staged))

    async def rolled_back(self, tx: Any, conn: asyncpg.Connection) -> None:
        """Roll the unit's transaction back, then write its refusals on their own (autocommit):
        they record no change, so they stay though the change went."""
        await tx.rollback()
        kept, self._staged, self._kept = self._kept, [], []
        if kept:
            await conn.execute(_insert(len(kept)), *record_args(kept))
