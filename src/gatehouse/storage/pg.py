"""The unit of work on PostgreSQL straight through asyncpg: the storage of every request.

The SQLAlchemy adapter (`sql.py`) runs the same contract on SQLite, MariaDB and PostgreSQL, and
still serves the relay, the courier's records, migrations and health. On PostgreSQL the
requests' reads and writes come here instead: SQLAlchemy's pool checkout and statement
execution cost about 100 µs of Python each, asyncpg about 25 µs, and an authenticated read is
little else. The statements are the same as `sql.py`'s, written out once (prepared and cached
per connection by asyncpg); `tests/integration/test_sql_contract.py` runs both adapters."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.tokens import RefreshToken
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import AccountExists, Unavailable
from gatehouse.storage.pg_audit import PgAuditTrail
from gatehouse.storage.pg_factors import PgFactors
from gatehouse.storage.pg_pool import ConnectionPool
from gatehouse.storage.pg_sessions import PgSessions

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")  # a record: User, PendingRegistration, ...


def dsn(database_url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy `postgresql+asyncpg://` URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


def unavailable(exc: BaseException) -> bool:
    """An error that says the database cannot be reached, not that a statement was wrong.

    `InternalClientError` is among them: it is what a statement meets on a connection whose
    server ended it (pg_terminate_backend, a restart) between two statements. The server's
    FATAL message arrives while asyncpg is idle and leaves the protocol in its error state
    until the socket's end is read; a statement sent in that window fails before it is sent."""
    if isinstance(exc, ValueError):  # an argument asyncpg could not encode: our mistake
        return False
    return isinstance(
        exc,
        OSError
        | ConnectionError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.AdminShutdownError,
    )


OUTBOX_COLUMNS = ("id", "topic", "message_key", "payload", "created_at")
_OUTBOX_INSERT = "INSERT INTO outbox ({}) VALUES ($1, $2, $3, $4, $5)".format(  # noqa: S608
    ", ".join(OUTBOX_COLUMNS)
)


def outbox_values(message: OutboxMessage) -> list[Any]:
    """An outbox row's values (OUTBOX_COLUMNS), as stored."""
    return [
        message.id,
        message.topic,
        message.key,
        message.payload_text(),
        _naive(message.created_at),
    ]


def _naive(value: datetime | None) -> datetime | None:
    """Times are stored as naive UTC (as the SQLAlchemy adapter stores them)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware(record: asyncpg.Record) -> dict[str, Any]:
    return {k: v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for k, v in record.items()}


def _values(obj: Any, names: tuple[str, ...]) -> list[Any]:
    values = (getattr(obj, name) for name in names)
    return [_naive(v) if isinstance(v, datetime) else v for v in values]


class _Table(Generic[R]):
    """A table whose columns are a record's fields, in the fields' order (as in sql_schema.py),
    and the statements every repository writes the same way, built once."""

    def __init__(self, name: str, record: type[R]):
        self.record = record
        self.fields = tuple(f.name for f in fields(record))
        columns = ", ".join(self.fields)
        self.select = f"SELECT {columns} FROM {name} WHERE "  # noqa: S608 - constants only
        placeholders = ", ".join(f"${i}" for i in range(1, len(self.fields) + 1))
        self.insert = f"INSERT INTO {name} ({columns}) VALUES ({placeholders})"  # noqa: S608
        # Rows whose phone is sealed under another key than `$1%`, oldest first (key rotation).
        self.encrypted_not_under = (
            f"{self.select}phone_ciphertext IS NOT NULL AND phone_ciphertext NOT LIKE $1 "
            "ORDER BY created_at, id LIMIT $2"
        )


USERS = _Table("users", User)
PENDING = _Table("pending_registrations", PendingRegistration)
TOKENS = _Table("refresh_tokens", RefreshToken)
REVOKE = "UPDATE refresh_tokens SET revoked_at = $2 WHERE {} = $1 AND revoked_at IS NULL"
REVOKE_FAMILY = REVOKE.format("family_id")
REVOKE_USER = REVOKE.format("user_id")
# users' columns after the id, each set from its parameter ($1 is the id).
USER_UPDATE = "UPDATE users SET {} WHERE id = $1".format(  # noqa: S608 - constants only
    ", ".join(f"{c} = ${i}" for i, c in enumerate(USERS.fields[1:], start=2))
)


class PgDatabase:
    """The api's connections (`pg_pool.ConnectionPool`), the first opened on first use (building
    the services does no I/O)."""

    def __init__(self, database_url: str, pool_size: int):
        self._dsn = dsn(database_url)
        self._pool = ConnectionPool(self._connect, pool_size)

    async def _connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            timeout=10,
            # A batch of refreshes is one statement of up to 29 KB (pg_refresh.py); above
            # asyncpg's 15 KiB default it would be parsed and planned again at every use.
            max_cacheable_statement_size=64 * 1024,
        )
        return connection

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    def uow(self) -> PgUnitOfWork:
        return PgUnitOfWork(self)

    def reader(self) -> PgUnitOfWork:
        return PgUnitOfWork(self, read_only=True)

    async def acquire(self) -> asyncpg.Connection:
        return await self._pool.acquire()

    def release(self, connection: asyncpg.Connection) -> None:
        self._pool.release(connection)

    def expire(self) -> None:
        self._pool.expire()

    def drop(self, connection: asyncpg.Connection) -> None:
        """Closes a connection in an unknown state and frees its place in the pool."""
        self._pool.drop(connection)

    async def close(self) -> None:
        await self._pool.close()
        self._pool = ConnectionPool(self._connect, self._pool.size)


class PgUnitOfWork:
    """One pooled connection and one transaction (none when `read_only`: a flow that makes one
    read would otherwise spend two of its three round trips on BEGIN and ROLLBACK)."""

    def __init__(self, db: PgDatabase, read_only: bool = False):
        self._db = db
        self._read_only = read_only
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._fresh = True
        self._broken = False  # a statement met a dead connection: never back to the pool
        self.users = PgUsers(self)
        self.pending = PgPending(self)
        self.refresh_tokens = PgRefreshTokens(self)
        self.sessions = PgSessions(self)
        self.factors = PgFactors(self)
        self.outbox = PgOutbox(self)
        self.audit = PgAuditTrail(self)

    async def __aenter__(self) -> PgUnitOfWork:
        await self._connect()
        if not self._read_only:
            # BEGIN is the unit's first round trip: a connection that died idle shows here.
            try:
                await self._first(self._begin)
            except BaseException as exc:
                # No __aexit__ follows a failed __aenter__: give the connection back here
                # (raises Unavailable for a database that cannot be reached).
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def _connect(self) -> None:
        try:
            self._conn = await self._db.acquire()
        except Exception as exc:
            if unavailable(exc):
                raise Unavailable("Database unavailable") from exc
            raise

    async def _begin(self, conn: asyncpg.Connection) -> None:
        self._tx = conn.transaction()
        await self._tx.start()

    async def _first(self, run: Any) -> Any:
        """The unit's first statement. A pooled connection that died while idle (database
        restarted, connections cut) fails it before anything of the unit ran: it is dropped
        and the statement sent again, once, on a new connection. The ones idle beside it most
        likely died with it, so the pool replaces them all as they are next acquired."""
        assert self._conn is not None
        self._fresh = False
        try:
            return await run(self._conn)
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._db.drop(self._conn)
            self._conn = None
            self._db.expire()
        await self._connect()
        return await run(self._conn)

    async def run(self, method: str, query: str, *args: Any) -> Any:
        """`method` ("fetchrow", "fetch", "execute") of the connection, for the repositories."""
        try:
            if self._fresh:
                return await self._first(lambda conn: getattr(conn, method)(query, *args))
            assert self._conn is not None
            return await getattr(self._conn, method)(query, *args)
        except BaseException as exc:
            # Whether the flow catches it or not, a connection left in an unknown state (dead,
            # or its statement cancelled midway) is not given back to the pool.
            if unavailable(exc) or not isinstance(exc, asyncpg.PostgresError | ValueError):
                self._broken = True
            raise

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        await self.audit.flush()  # last: the chain's head is locked from here to the commit
        await self._tx.commit()
        self._tx = None

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and (self._broken or (e is not None and unavailable(e))):
            self._db.drop(conn)  # its transaction, if any, dies with it on the server
        elif conn is not None:
            try:
                if self._tx is not None:  # undone, but for the audit records of refusals
                    await self.audit.rolled_back(self._tx, conn)
            except Exception:
                self._db.drop(conn)  # in an unknown state: never back to the pool
            except BaseException:  # cancelled midway: dropped too, or its slot is lost
                self._db.drop(conn)
                raise
            else:
                self._db.release(conn)
        if e is not None and unavailable(e):
            raise Unavailable("Database unavailable") from e


class _Repo(Generic[R]):
    table: _Table[R]

    def __init__(self, uow: PgUnitOfWork):
        self._uow = uow

    async def _one(self, where: str, *args: Any) -> R | None:
        row = await self._uow.run("fetchrow", self.table.select + where, *args)
        return None if row is None else self.table.record(**_aware(row))

    async def _encrypted_not_under(self, prefix: str, limit: int) -> list[R]:
        rows = await self._uow.run("fetch", self.table.encrypted_not_under, f"{prefix}%", limit)
        return [self.table.record(**_aware(row)) for row in rows]

    async def _insert(self, record: R) -> None:
        await self._uow.run("execute", self.table.insert, *_values(record, self.table.fields))


class PgUsers(_Repo[User]):
    table = USERS

    async def get(self, user_id: str) -> User | None:
        return await self._one("id = $1", user_id)

    async def get_signed_in(self, user_id: str, session_id: str) -> User | None:
        return await self._one(
            "id = $1 AND disabled_at IS NULL AND EXISTS (SELECT 1 FROM sessions "
            "WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL)",
            user_id,
            session_id,
        )

    async def get_by_email(self, email: str) -> User | None:
        return await self._one("email = $1", email)

    async def get_by_phone_index(self, phone_index: str) -> User | None:
        return await self._one("phone_index = $1", phone_index)

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[User]:
        return await self._encrypted_not_under(prefix, limit)

    async def add(self, user: User) -> None:
        try:
            await self._insert(user)
        except asyncpg.UniqueViolationError as exc:
            raise AccountExists() from exc

    async def update(self, user: User) -> None:
        try:
            await self._uow.run("execute", USER_UPDATE, *_values(user, USERS.fields))
        except asyncpg.UniqueViolationError as exc:
            raise AccountExists() from exc

    async def delete(self, user_id: str) -> None:
        await self._uow.run("execute", "DELETE FROM users WHERE id = $1", user_id)


class PgPending(_Repo[PendingRegistration]):
    table = PENDING

    async def get_by_email(self, email: str) -> PendingRegistration | None:
        return await self._one("email = $1", email)

    async def encrypted_not_under(self, prefix: str, limit: int) -> list[PendingRegistration]:
        return await self._encrypted_not_under(prefix, limit)

    async def put(self, pending: PendingRegistration) -> None:
        # Delete-then-insert, as the SQLAlchemy adapter does on every database.
        await self._uow.run(
            "execute", "DELETE FROM pending_registrations WHERE email = $1", pending.email
        )
        await self._insert(pending)

    async def delete(self, pending_id: str) -> None:
        await self._uow.run(
            "execute", "DELETE FROM pending_registrations WHERE id = $1", pending_id
        )


class PgRefreshTokens(_Repo[RefreshToken]):
    table = TOKENS

    async def add(self, token: RefreshToken) -> None:
        await self._insert(token)

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        return await self._one("token_hash = $1", token_hash)

    async def mark_used(self, token_id: str, now: datetime) -> bool:
        # The conditional update is the arbiter between two concurrent refreshes.
        status = await self._uow.run(
            "execute",
            "UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
            token_id,
            _naive(now),
        )
        return bool(status == "UPDATE 1")

    async def revoke_family(self, family_id: str, now: datetime) -> int:
        return await self._revoke(REVOKE_FAMILY, family_id, now)

    async def revoke_user(self, user_id: str, now: datetime) -> int:
        return await self._revoke(REVOKE_USER, user_id, now)

    async def _revoke(self, query: str, value: str, now: datetime) -> int:
        status = await self._uow.run("execute", query, value, _naive(now))
        return int(str(status).rsplit(" ", 1)[-1])


class PgOutbox(_Repo[OutboxMessage]):
    async def add(self, message: OutboxMessage) -> None:
        await self._uow.run(
            "execute",
            _OUTBOX_INSERT,
            *outbox_values(message),
        )
