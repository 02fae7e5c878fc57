"""The audit trail's ports (docs/audit.md): the unit of work's side, where flows stage records
written as their transaction commits, and the store's side, which links them into the chain (the
relay role's chainer) and which operators read, verify and prune. And the admin user search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatehouse.domain.audit import AuditEntry, AuditRecord, ChainHead, Checkpoint
from gatehouse.domain.users import User


class AuditTrail(Protocol):
    """A unit of work's audit records. `add`: written as the unit commits, in its transaction
    (one insert, no lock shared with other units); gone if it rolls back, as the change it
    records is. `keep`: a refusal, which records no change: written as the unit commits or, if
    it rolls back, in a transaction of its own right after."""

    def add(self, entry: AuditEntry) -> None: ...
    def keep(self, entry: AuditEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Records newest first: of one user, of one action (`type`; a trailing `*` makes it a
    prefix), at or after `since` and before `until`, written before the record of id `before`
    (a cursor)."""

    user_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    limit: int = 100


class AuditStore(Protocol):
    """The chain on the service's database: linked by the chainer, read by operators."""

    async def chain(self, limit: int) -> int:
        """Link up to `limit` waiting records, in `id` order, after the head, in one transaction
        holding the head's lock (chainers take turns: the chain never forks). Returns how many."""

    async def waiting(self) -> tuple[int, datetime | None]:
        """How many records wait to be linked, and when the oldest of them happened."""

    async def find(self, query: AuditQuery) -> list[AuditRecord]: ...
    async def scan(self, after: int, through: int, limit: int) -> list[AuditRecord]:
        """Linked records with `after < seq <= through`, in `seq` order, at most `limit`."""

    async def head(self) -> ChainHead:
        """The newest record's position and hash (0 and the genesis hash before any)."""

    async def checkpoint(self) -> Checkpoint | None: ...
    async def prune(self, before: datetime, now: datetime, batch: int) -> int:
        """Remove the oldest linked records, as long as they are older than `before` (the
        chain's start moves forward, never leaving a hole), a batch per transaction, each moving
        the checkpoint to the last one removed. Returns how many were removed."""


class UserDirectory(Protocol):
    """The admin API's search: accounts whose email starts with `prefix`, in email order,
    after the email `after` (a cursor), at most `limit`."""

    async def by_email_prefix(self, prefix: str, after: str | None, limit: int) -> list[User]: ...
