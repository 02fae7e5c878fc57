"""Test doubles: the storage, outbox store, notifier and delivery log in memory, for the unit
suite. Never used by `gatehouse serve` (its embedded implementations are production code in the
package: security/memory.py, outbox/bus.py, jobs/embedded.py). The `MemoryDatabase` and its
`MemoryOutboxStore` run the storage contract beside SQL (tests/integration/test_sql_contract.py,
`[fake]`), so a unit test's stand-in behaves as the database does."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy.exc import IntegrityError

from gatehouse.domain.audit import AuditEntry, AuditRecord, waiting
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.domain.sessions import RefreshStep, SessionRecord
from gatehouse.domain.tokens import RefreshToken
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import AccountExists, Conflict
from gatehouse.ports import (
    FINAL,
    Claim,
    Clock,
    DeliveryRecord,
    OutboxRecord,
    Status,
)


@dataclass
class _Tables:
    users: dict[str, User] = field(default_factory=dict)
    pending: dict[str, PendingRegistration] = field(default_factory=dict)
    tokens: dict[str, RefreshToken] = field(default_factory=dict)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    totp: dict[str, TotpFactor] = field(default_factory=dict)
    recovery: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)  # hash: user
    passkeys: dict[str, Passkey] = field(default_factory=dict)
    outbox: list[tuple[int, OutboxMessage, datetime | None]] = field(default_factory=list)
    # The audit chain (tests/fakes_audit.py links and reads it): records in `id` order, and
    # "head" and "checkpoint".
    audit: list[AuditRecord] = field(default_factory=list)
    audit_meta: dict[str, Any] = field(default_factory=dict)


class MemoryDatabase:
    """Tables in dicts; a unit of work holds the lock and restores a snapshot on rollback."""

    def __init__(self) -> None:
        self.tables = _Tables()
        self.lock = asyncio.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def uow(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self)


class _Repo:
    def __init__(self, db: MemoryDatabase):
        self._t = db.tables
        self._db = db


class MemoryUsers(_Repo):
    async def get(self, user_id: str) -> User | None:
        return self._t.users.get(user_id)

    async def get_signed_in(self, user_id: str, session_id: str) -> User | None:
        session = self._t.sessions.get(session_id)
        live = session is not None and session.user_id == user_id and session.revoked_at is None
        user = self._t.users.get(user_id) if live else None
        return user if user is not None and user.disabled_at is None else None

    async def get_by_email(self, email: str) -> User | None:
        return next((u for u in self._t.users.values() if u.email == email), None)

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[User]:
        stale = [
            u
            for u in self._t.users.values()
            if u.phone_ciphertext and not u.phone_ciphertext.startswith(prefix)
        ]
        return sorted(stale, key=lambda u: (u.created_at, u.id))[:limit]

    async def get_by_phone_index(self, phone_index: str) -> User | None:
        return next((u for u in self._t.users.values() if u.phone_index == phone_index), None)

    def _check_unique(self, user: User) -> None:
        for other in self._t.users.values():
            if other.id != user.id and (
                other.email == user.email
                or (user.phone_index is not None and other.phone_index == user.phone_index)
            ):
                raise AccountExists()

    async def add(self, user: User) -> None:
        if user.id in self._t.users:
            raise AccountExists()
        self._check_unique(user)
        self._t.users[user.id] = user

    async def update(self, user: User) -> None:
        if user.id not in self._t.users:
            return  # as SQL's UPDATE: no such row, nothing written
        self._check_unique(user)
        self._t.users[user.id] = user

    async def delete(self, user_id: str) -> None:
        self._t.users.pop(user_id, None)


class MemoryPending(_Repo):
    async def get_by_email(self, email: str) -> PendingRegistration | None:
        return self._t.pending.get(email)

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[PendingRegistration]:
        stale = [
            p
            for p in self._t.pending.values()
            if p.phone_ciphertext and not p.phone_ciphertext.startswith(prefix)
        ]
        return sorted(stale, key=lambda p: (p.created_at, p.id))[:limit]

    async def put(self, pending: PendingRegistration) -> None:
        self._t.pending[pending.email] = pending

    async def delete(self, pending_id: str) -> None:
        for email, p in list(self._t.pending.items()):
            if p.id == pending_id:
                del self._t.pending[email]


class MemoryRefreshTokens(_Repo):
    async def add(self, token: RefreshToken) -> None:
        self._t.tokens[token.id] = token

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        return next((t for t in self._t.tokens.values() if t.token_hash == token_hash), None)

    async def mark_used(self, token_id: str, now: datetime) -> bool:
        token = self._t.tokens.get(token_id)
        if token is None or token.used_at is not None:
            return False
        self._t.tokens[token_id] = replace(token, used_at=now)
        return True

    async def _revoke(self, match: Callable[[RefreshToken], bool], now: datetime) -> int:
        hits = [t for t in self._t.tokens.values() if match(t) and t.revoked_at is None]
        for t in hits:
            self._t.tokens[t.id] = replace(t, revoked_at=now)
        return len(hits)

    async def revoke_family(self, family_id: str, now: datetime) -> int:
        return await self._revoke(lambda t: t.family_id == family_id, now)

    async def revoke_user(self, user_id: str, now: datetime) -> int:
        return await self._revoke(lambda t: t.user_id == user_id, now)


class MemorySessions(_Repo):
    """As SQL: times must be aware, and an id already taken is refused."""

    async def add(self, session: SessionRecord) -> None:
        if session.id in self._t.sessions:
            raise IntegrityError("INSERT INTO sessions", None, Exception("duplicate id"))
        for moment in (session.created_at, session.last_used_at, session.auth_time):
            MemoryDeliveryLog._utc(moment)
        self._t.sessions[session.id] = session

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._t.sessions.get(session_id)

    async def list_live_for_user(self, user_id: str) -> list[SessionRecord]:
        live = [
            s for s in self._t.sessions.values() if s.user_id == user_id and s.revoked_at is None
        ]
        return sorted(live, key=lambda s: (s.created_at, s.id), reverse=True)

    async def seen_since(
        self, user_id: str, user_agent: str | None, since: datetime
    ) -> tuple[bool, bool]:
        MemoryDeliveryLog._utc(since)
        agents = {
            s.user_agent
            for s in self._t.sessions.values()
            if s.user_id == user_id and s.last_used_at >= since
        }
        return bool(agents), user_agent in agents

    async def touch(
        self, session_id: str, now: datetime, *, authenticated: bool = False
    ) -> tuple[SessionRecord, User] | None:
        session = self._t.sessions.get(session_id)
        if session is None or session.revoked_at is not None:
            return None
        proved = now if authenticated else session.auth_time
        session = replace(session, last_used_at=now, auth_time=proved)
        self._t.sessions[session_id] = session
        user = self._t.users.get(session.user_id)
        return None if user is None or user.disabled_at is not None else (session, user)

    async def _revoke(self, match: Callable[[SessionRecord], bool], now: datetime, why: str) -> int:
        hits = [s for s in self._t.sessions.values() if match(s) and s.revoked_at is None]
        for s in hits:
            self._t.sessions[s.id] = replace(s, revoked_at=now, revoked_reason=why)
        return len(hits)

    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool:
        return await self._revoke(lambda s: s.id == session_id, now, reason) == 1

    async def revoke_user(self, user_id: str, now: datetime, reason: str) -> int:
        return await self._revoke(lambda s: s.user_id == user_id, now, reason)

    async def rotate(self, step: RefreshStep) -> bool:
        session = self._t.sessions.get(step.session_id)
        if session is None or session.revoked_at is not None:
            return False
        if (session.refresh_generation, session.refresh_hash) != (
            step.generation,
            step.current_hash,
        ):
            return False
        self._t.sessions[step.session_id] = replace(
            session,
            refresh_generation=step.generation + 1,
            refresh_hash=step.next_hash,
            refresh_expires_at=step.next_expires_at,
            expires_at=step.session_end,
            last_used_at=step.now,
        )
        return True


class MemoryFactors(_Repo):
    """As `storage/sql_factors.py`: every spend is a check and a write with no await between."""

    async def totp(self, user_id: str) -> TotpFactor | None:
        return self._t.totp.get(user_id)

    async def put_totp(self, factor: TotpFactor) -> None:
        current = self._t.totp.get(factor.user_id)
        if current is not None and current.confirmed_at is not None:
            raise IntegrityError("INSERT INTO totp_factors", None, Exception("duplicate key"))
        self._t.totp[factor.user_id] = factor

    async def confirm_totp(self, user_id: str, now: datetime, step: int) -> bool:
        current = self._t.totp.get(user_id)
        if current is None or current.confirmed_at is not None:
            return False
        self._t.totp[user_id] = replace(current, confirmed_at=now, last_step=step)
        return True

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        current = self._t.totp.get(user_id)
        if current is None or current.confirmed_at is None or current.last_step >= step:
            return False
        self._t.totp[user_id] = replace(current, last_step=step)
        return True

    async def remove_totp(self, user_id: str) -> bool:
        return self._t.totp.pop(user_id, None) is not None

    async def rewrap_totp(self, user_id: str, secret_ciphertext: str) -> None:
        current = self._t.totp[user_id]
        self._t.totp[user_id] = replace(current, secret_ciphertext=secret_ciphertext)

    async def totp_page(self, after: str, limit: int) -> list[TotpFactor]:
        return [self._t.totp[k] for k in sorted(self._t.totp) if k > after][:limit]

    async def replace_recovery_codes(
        self, user_id: str, code_hashes: list[str], now: datetime
    ) -> None:
        for code_hash in [h for h, (u, _) in self._t.recovery.items() if u == user_id]:
            del self._t.recovery[code_hash]
        self._t.recovery.update(dict.fromkeys(code_hashes, (user_id, None)))

    async def use_recovery_code(self, user_id: str, code_hash: str, now: datetime) -> bool:
        if self._t.recovery.get(code_hash) != (user_id, None):
            return False
        self._t.recovery[code_hash] = (user_id, now)
        return True

    async def recovery_codes_left(self, user_id: str) -> int:
        return sum(1 for u, used in self._t.recovery.values() if u == user_id and used is None)

    async def add_passkey(self, passkey: Passkey) -> None:
        if any(p.credential_id == passkey.credential_id for p in self._t.passkeys.values()):
            raise Conflict("This passkey is already registered")
        self._t.passkeys[passkey.id] = passkey

    async def passkeys(self, user_id: str) -> list[Passkey]:
        mine = [p for p in self._t.passkeys.values() if p.user_id == user_id]
        return sorted(mine, key=lambda p: (p.created_at, p.id))

    async def passkey_by_credential(self, credential_id: str) -> Passkey | None:
        found = [p for p in self._t.passkeys.values() if p.credential_id == credential_id]
        return found[0] if found else None

    async def use_passkey(self, passkey_id: str, sign_count: int, now: datetime) -> bool:
        current = self._t.passkeys.get(passkey_id)
        if current is None:
            return False
        if not (current.sign_count < sign_count or current.sign_count == sign_count == 0):
            return False
        self._t.passkeys[passkey_id] = replace(current, sign_count=sign_count, last_used_at=now)
        return True

    async def remove_passkey(self, user_id: str, passkey_id: str) -> bool:
        current = self._t.passkeys.get(passkey_id)
        if current is None or current.user_id != user_id:
            return False
        del self._t.passkeys[passkey_id]
        return True

    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool:
        current = self._t.passkeys.get(passkey_id)
        if current is None or current.user_id != user_id:
            return False
        self._t.passkeys[passkey_id] = replace(current, name=name)
        return True

    async def methods(self, user_id: str) -> tuple[str, ...]:
        totp = self._t.totp.get(user_id)
        found = {
            "totp": totp is not None and totp.confirmed_at is not None,
            "passkey": bool(await self.passkeys(user_id)),
            "recovery_code": bool(await self.recovery_codes_left(user_id)),
        }
        return tuple(name for name, present in found.items() if present)

    async def remove_all(self, user_id: str) -> None:
        await self.remove_totp(user_id)
        await self.replace_recovery_codes(user_id, [], datetime.now(UTC))
        for passkey in await self.passkeys(user_id):
            del self._t.passkeys[passkey.id]


class MemoryOutbox(_Repo):
    async def add(self, message: OutboxMessage) -> None:
        self._t.outbox.append((self._db.next_seq(), message, None))


class MemoryAuditTrail(_Repo):
    """As `storage/sql_audit.py`: staged entries written, waiting to be linked, as the unit
    commits; refusals written even when it rolls back."""

    def __init__(self, db: MemoryDatabase):
        super().__init__(db)
        self.staged: list[AuditEntry] = []
        self.kept: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> None:
        self.staged.append(entry)

    def keep(self, entry: AuditEntry) -> None:
        self.staged.append(entry)
        self.kept.append(entry)

    def write(self, entries: list[AuditEntry]) -> None:
        for e in entries:
            self._t.audit.append(waiting(self._db.next_seq(), e))
        self.staged, self.kept = [], []


class MemoryUnitOfWork:
    def __init__(self, db: MemoryDatabase):
        self._db = db
        self._snapshot: _Tables | None = None
        self.users = MemoryUsers(db)
        self.pending = MemoryPending(db)
        self.refresh_tokens = MemoryRefreshTokens(db)
        self.sessions = MemorySessions(db)
        self.factors = MemoryFactors(db)
        self.outbox = MemoryOutbox(db)
        self.audit = MemoryAuditTrail(db)

    async def __aenter__(self) -> MemoryUnitOfWork:
        await self._db.lock.acquire()
        self._snapshot = copy.deepcopy(self._db.tables)
        return self

    async def commit(self) -> None:
        self.audit.write(self.audit.staged)
        self._snapshot = None

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._snapshot is not None:  # not committed: put every table back
            tables = ("users", "pending", "tokens", "sessions", "outbox")
            for name in (*tables, "totp", "recovery", "passkeys", "audit", "audit_meta"):
                getattr(self._db.tables, name).clear()
                container = getattr(self._snapshot, name)
                target = getattr(self._db.tables, name)
                target.update(container) if isinstance(target, dict) else target.extend(container)
            self.audit.write(self.audit.kept)  # refusals stay though the change went
        self._db.lock.release()


class MemoryOutboxStore:
    def __init__(self, db: MemoryDatabase, clock: Clock):
        self._db = db
        self._clock = clock

    async def claim(
        self, limit: int, publish: Callable[[Sequence[OutboxRecord]], Awaitable[None]]
    ) -> int:
        async with self._db.lock:
            rows = [(i, r) for i, r in enumerate(self._db.tables.outbox) if r[2] is None][:limit]
            if not rows:
                return 0
            await publish([OutboxRecord(seq, msg) for _, (seq, msg, _p) in rows])
            now = self._clock()
            for index, (seq, msg, _p) in rows:
                self._db.tables.outbox[index] = (seq, msg, now)
            return len(rows)

    async def pending_count(self) -> int:
        return sum(1 for r in self._db.tables.outbox if r[2] is None)

    async def prune(self, older_than: datetime) -> int:
        before = len(self._db.tables.outbox)
        self._db.tables.outbox[:] = [
            r for r in self._db.tables.outbox if r[2] is None or r[2] >= older_than
        ]
        return before - len(self._db.tables.outbox)


class MemoryNotifier:
    """Records what would be pushed; for unit tests and processes without Socket.IO."""

    def __init__(self) -> None:
        self.sent: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=10_000)

    async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None:
        self.sent.append((room, event, payload))

    async def session_revoked(self, user_id: str, session_id: str, reason: str) -> None:
        payload = {"session_id": session_id, "reason": reason}
        await self.emit(f"session:{session_id}", "session.revoked", payload)
        await self.emit(f"user:{user_id}", "session.revoked", payload)


class MemoryDeliveryLog:
    """The courier's delivery records in a dict. Each operation runs without yielding to the
    event loop between its read and its write, so it is as atomic as the SQL statement; events go
    to the database's outbox under its lock, like one transaction. It runs the delivery log's
    contract beside SQL (tests/integration/test_deliveries_sql.py and
    test_delivery_leases_sql.py, `[fake]`), and matches it where SQL is stricter than a dict:
    times must be aware (and come back in UTC), `last_error` is cut to its column's 200
    characters, and an event already in the outbox is refused with the record left as it was."""

    LAST_ERROR_LENGTH = 200  # the `deliveries.last_error` column's

    def __init__(self, db: MemoryDatabase | None = None) -> None:
        self.db = db or MemoryDatabase()
        self.records: dict[str, DeliveryRecord] = {}

    @staticmethod
    def _utc(moment: datetime) -> datetime:
        """As SQL's UTC columns: a naive time is refused (SQLAlchemy wraps the same ValueError in
        a `StatementError`), an aware one comes back in UTC."""
        if moment.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return moment.astimezone(UTC)

    async def get(self, message_id: str) -> DeliveryRecord | None:
        return self.records.get(message_id)

    async def claim(self, message_id: str, owner: str, now: datetime, until: datetime) -> Claim:
        now, until = self._utc(now), self._utc(until)
        record = self.records.get(message_id)
        if record is None:
            record = DeliveryRecord(
                message_id, Status.SENDING, None, 0, None, now, now, owner, until
            )
            self.records[message_id] = record
            return Claim(True, record)
        takeable = record.status == Status.QUEUED or (
            record.status == Status.SENDING
            and (
                record.lease_until is None
                or record.lease_until <= now
                or record.lease_owner == owner
            )
        )
        if not takeable:
            return Claim(False, record)
        record = replace(
            record, status=Status.SENDING, lease_owner=owner, lease_until=until, updated_at=now
        )
        self.records[message_id] = record
        return Claim(True, record)

    async def release(self, message_id: str, owner: str, now: datetime) -> None:
        now = self._utc(now)
        record = self.records.get(message_id)
        if record is not None and record.status == Status.SENDING and record.lease_owner == owner:
            self.records[message_id] = replace(
                record, status=Status.QUEUED, lease_owner=None, lease_until=None, updated_at=now
            )

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
        status = Status(status)  # a test's plain string too, as the SQL log takes one
        now = self._utc(now)
        # As the SQL log: the column holds 200 characters, and an empty error is none.
        error = error[: self.LAST_ERROR_LENGTH] if error else None
        async with self.db.lock:
            previous = self.records.get(message_id)
            if previous is not None and (
                previous.status in FINAL
                or (status not in FINAL and owner is not None and previous.lease_owner != owner)
            ):
                return False
            # The outbox's id is unique in SQL: the same event twice fails the transaction, and
            # the record is not written either. Checked before anything is.
            if event is not None and any(m.id == event.id for _s, m, _p in self.db.tables.outbox):
                raise IntegrityError(
                    "INSERT INTO outbox", None, Exception(f"duplicate outbox id {event.id}")
                )
            created = previous.created_at if previous else now
            keep = status not in FINAL and previous is not None  # a final status ends the lease
            lease = (
                (previous.lease_owner, previous.lease_until) if keep and previous else (None, None)
            )
            self.records[message_id] = DeliveryRecord(
                message_id, status, channel, attempts, error, created, now, *lease
            )
            if event is not None:
                self.db.tables.outbox.append((self.db.next_seq(), event, None))
            return True
