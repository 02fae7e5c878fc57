"""SQL storage on PostgreSQL, MariaDB/MySQL or SQLite: the unit of work, repositories, outbox."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, event, exists, insert, select, update
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable

from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.tokens import RefreshToken
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import AccountExists, Unavailable
from gatehouse.storage.schema import (
    outbox,
    pending_registrations,
    refresh_tokens,
    sessions,
    users,
)
from gatehouse.storage.sql_audit import SqlAuditTrail, append
from gatehouse.storage.sql_factors import SqlFactors
from gatehouse.storage.sql_sessions import SqlSessions

log = logging.getLogger(__name__)


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    parsed = make_url(url)
    # Pre-ping replaces a pooled connection that died while idle; units of work also replace
    # one found dead on their first statement (`SqlUnitOfWork.execute`), for the window between.
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 30}}
    else:
        # Overflow connections are opened for a burst and closed when returned: under steady
        # load above the pool size that is a new connection (and server process) per request.
        # A pool as large as the process's usual concurrency keeps them; the overflow is a
        # margin, and past it a request waits for a connection rather than adding load.
        kwargs.update(pool_size=pool_size, max_overflow=pool_size // 2, pool_recycle=1800)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        # WAL lets readers run beside the one writer; the busy timeout queues writers
        # instead of failing them with "database is locked".
        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def _unavailable(exc: BaseException) -> bool:
    """A database error that says the database is unreachable, not that the query was wrong."""
    if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        return bool(exc.connection_invalidated) or exc.__class__.__name__ in (
            "OperationalError",
            "InterfaceError",
        )
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


class Executor(Protocol):
    """What repositories run statements on: a connection, or a unit of work (which replaces a
    dead pooled connection on its first statement)."""

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]: ...


# Built once: composing a statement costs more Python than sending it (the hot path's reads).
_USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))
# A disabled account is signed in nowhere, whatever its sessions (they are revoked with it).
_SIGNED_IN_USER = _USER_BY_ID.where(users.c.disabled_at.is_(None)).where(
    exists()
    .where(sessions.c.id == bindparam("session_id"), sessions.c.user_id == users.c.id)
    .where(sessions.c.revoked_at.is_(None))
)


class SqlUsers:
    def __init__(self, conn: Executor):
        self._conn = conn

    async def _one(self, query: Executable, params: dict[str, Any] | None = None) -> User | None:
        row = (await self._conn.execute(query, params)).first()
        return None if row is None else User(**row._mapping)

    async def get(self, user_id: str) -> User | None:
        return await self._one(_USER_BY_ID, {"user_id": user_id})

    async def get_signed_in(self, user_id: str, session_id: str) -> User | None:
        return await self._one(_SIGNED_IN_USER, {"user_id": user_id, "session_id": session_id})

    async def get_by_email(self, email: str) -> User | None:
        return await self._one(select(users).where(users.c.email == email))

    async def get_by_phone_index(self, phone_index: str) -> User | None:
        return await self._one(select(users).where(users.c.phone_index == phone_index))

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[User]:
        query = (
            select(users)
            .where(users.c.phone_ciphertext.is_not(None))
            .where(users.c.phone_ciphertext.not_like(f"{prefix}%"))
            .order_by(users.c.created_at, users.c.id)
            .limit(limit)
        )
        return [User(**row._mapping) for row in await self._conn.execute(query)]

    async def add(self, user: User) -> None:
        try:
            await self._conn.execute(insert(users).values(**asdict(user)))
        except IntegrityError as exc:
            raise AccountExists() from exc

    async def update(self, user: User) -> None:
        values = asdict(user)
        values.pop("id")
        try:
            await self._conn.execute(update(users).where(users.c.id == user.id).values(values))
        except IntegrityError as exc:
            raise AccountExists() from exc

    async def delete(self, user_id: str) -> None:
        await self._conn.execute(delete(users).where(users.c.id == user_id))


class SqlPending:
    def __init__(self, conn: Executor):
        self._conn = conn

    async def get_by_email(self, email: str) -> PendingRegistration | None:
        query = select(pending_registrations).where(pending_registrations.c.email == email)
        row = (await self._conn.execute(query)).first()
        return None if row is None else PendingRegistration(**row._mapping)

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[PendingRegistration]:
        table = pending_registrations
        query = (
            select(table)
            .where(table.c.phone_ciphertext.is_not(None))
            .where(table.c.phone_ciphertext.not_like(f"{prefix}%"))
            .order_by(table.c.created_at, table.c.id)
            .limit(limit)
        )
        return [PendingRegistration(**row._mapping) for row in await self._conn.execute(query)]

    async def put(self, pending: PendingRegistration) -> None:
        # Delete-then-insert is the one upsert all three dialects share.
        await self._conn.execute(
            delete(pending_registrations).where(pending_registrations.c.email == pending.email)
        )
        await self._conn.execute(insert(pending_registrations).values(**asdict(pending)))

    async def delete(self, pending_id: str) -> None:
        await self._conn.execute(
            delete(pending_registrations).where(pending_registrations.c.id == pending_id)
        )


class SqlRefreshTokens:
    def __init__(self, conn: Executor):
        self._conn = conn

    async def add(self, token: RefreshToken) -> None:
        await self._conn.execute(insert(refresh_tokens).values(**asdict(token)))

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        query = select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
        row = (await self._conn.execute(query)).first()
        return None if row is None else RefreshToken(**row._mapping)

    async def mark_used(self, token_id: str, now: datetime) -> bool:
        # The conditional update is the arbiter between two concurrent refreshes.
        result = await self._conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.id == token_id, refresh_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1

    async def revoke_family(self, family_id: str, now: datetime) -> int:
        return await self._revoke(refresh_tokens.c.family_id == family_id, now)

    async def revoke_user(self, user_id: str, now: datetime) -> int:
        return await self._revoke(refresh_tokens.c.user_id == user_id, now)

    async def _revoke(self, where: Any, now: datetime) -> int:
        result = await self._conn.execute(
            update(refresh_tokens)
            .where(where, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(result.rowcount)


class SqlOutbox:
    def __init__(self, conn: Executor):
        self._conn = conn

    _insert = insert(outbox)  # built once: the values go as parameters

    async def add(self, message: OutboxMessage) -> None:
        await self._conn.execute(
            self._insert,
            {
                "id": message.id,
                "topic": message.topic,
                "message_key": message.key,
                "payload": message.payload_text(),
                "created_at": message.created_at,
            },
        )


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The engine's pool, with connections that run outside transactions: for read-only units
    of work (make it once; it is a new object each time)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class SqlUnitOfWork:
    """One connection, one transaction; repositories share it. `read_only`: no transaction at
    all (autocommit), for a flow that makes a single read: BEGIN and ROLLBACK would be two of
    its three round trips."""

    def __init__(self, engine: AsyncEngine, read_only: bool = False):
        self._engine = engine  # with `read_only`, an `autocommit(engine)`
        self._read_only = read_only
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        await self._connect()
        self._fresh = True
        self.users = SqlUsers(self)
        self.pending = SqlPending(self)
        self.refresh_tokens = SqlRefreshTokens(self)
        self.sessions = SqlSessions(self)
        self.factors = SqlFactors(self)
        self.outbox = SqlOutbox(self)
        self.audit = SqlAuditTrail(self)
        return self

    async def _connect(self) -> None:
        self._conn = None
        try:
            self._conn = await self._engine.connect()
            if not self._read_only:
                await self._conn.begin()
        except Exception as exc:
            if self._conn is not None:
                await self._conn.close()
            if _unavailable(exc):
                raise Unavailable("Database unavailable") from exc
            raise

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        """Runs a statement. A pooled connection that died while idle (database restarted,
        connections cut) fails the unit's first statement, before anything of the unit ran or
        could commit: it is replaced and the statement sent again (pre-ping cannot see a
        connection that dies between its ping and the first statement)."""
        assert self._conn is not None
        if not self._fresh:
            return await self._conn.execute(statement, parameters)
        self._fresh = False
        try:
            return await self._conn.execute(statement, parameters)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # SQLAlchemy invalidated the connection and, with it, every pooled one as old.
        with contextlib.suppress(Exception):
            await self._conn.close()
        await self._connect()
        assert self._conn is not None
        return await self._conn.execute(statement, parameters)

    async def commit(self) -> None:
        assert self._conn is not None
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        await self.audit.flush()  # last: the chain's head is locked from here to the commit
        await self._conn.commit()

    async def _write_refusals(self) -> None:
        """After a rollback, the audit records of refusals: they record no change, so they are
        written though the unit's change was not (in a transaction of their own)."""
        refusals = self.audit.refusals()
        if not refusals:
            return
        assert self._conn is not None
        try:
            await append(self, refusals)
            await self._conn.commit()
        except Exception as exc:
            log.warning("audit: %d refusal record(s) not written: %r", len(refusals), exc)
            await self._conn.rollback()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if not self._read_only:
                await self._conn.rollback()  # no-op after commit; undoes everything otherwise
                await self._write_refusals()
            await self._conn.close()
        except Exception:  # noqa: S110 - the connection is gone; the original error matters
            pass
        if e is not None and _unavailable(e):
            raise Unavailable("Database unavailable") from e


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(select(1))
