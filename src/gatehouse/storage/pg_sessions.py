"""The `Sessions` repository straight on asyncpg: `sql_sessions.py`'s statements, written out.

Refresh runs `touch` on every rotation: here it is one statement (the update, and the session
read back with its user), where SQLAlchemy's portable version needs two."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gatehouse.domain.sessions import RefreshStep, SessionRecord, decode_amr, encode_amr
from gatehouse.domain.users import User

if TYPE_CHECKING:
    from gatehouse.storage.pg import PgUnitOfWork

NAMES = tuple(f.name for f in fields(SessionRecord))  # the table's columns, in this order
_USER_NAMES = tuple(f.name for f in fields(User))
_COLUMNS = ", ".join(NAMES)
_SELECT = f"SELECT {_COLUMNS} FROM sessions WHERE "  # noqa: S608 - constants only
_INSERT = "INSERT INTO sessions ({}) VALUES ({})".format(  # noqa: S608 - constants only
    _COLUMNS, ", ".join(f"${i}" for i in range(1, len(NAMES) + 1))
)
# The update and the row read back with its user, in one statement (one round trip).
_TOUCH = (
    "WITH s AS (UPDATE sessions SET last_used_at = $2::timestamp, "  # noqa: S608 - constants
    "auth_time = CASE WHEN $3::boolean THEN $2::timestamp ELSE auth_time END "
    "WHERE id = $1 AND revoked_at IS NULL RETURNING *) "
    "SELECT {}, {} FROM s JOIN users u ON u.id = s.user_id AND u.disabled_at IS NULL".format(
        ", ".join(f"s.{n}" for n in NAMES), ", ".join(f"u.{n}" for n in _USER_NAMES)
    )
)
_ROTATE = (
    "UPDATE sessions SET refresh_generation = $2 + 1, refresh_hash = $4, "
    "refresh_expires_at = $5, expires_at = $6, last_used_at = $7 WHERE id = $1 "
    "AND refresh_generation = $2 AND refresh_hash IS NOT DISTINCT FROM $3 AND revoked_at IS NULL"
)
_REVOKE = (
    "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL"
)
# Every live session of a user, locked in the order of their ids first: the order batched
# refreshes lock theirs in (pg_refresh.py), so that the two never wait on each other in a cycle
# (a deadlock that would fail a logout everywhere or a password change).
_REVOKE_USER = """
WITH locked AS (
    SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id FOR UPDATE
)
UPDATE sessions s SET revoked_at = $2, revoked_reason = $3
FROM locked WHERE s.id = locked.id AND s.revoked_at IS NULL
"""


def _naive(value: Any) -> Any:
    """Times are stored as naive UTC, as every adapter stores them (pg.py's rule)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _aware(values: Sequence[Any]) -> list[Any]:
    return [v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in values]


def _record(values: Sequence[Any]) -> SessionRecord:
    found = dict(zip(NAMES, _aware(values), strict=True))
    found["amr"] = decode_amr(found["amr"])
    return SessionRecord(**found)


_SEEN = """
SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND last_used_at >= $3),
    EXISTS (SELECT 1 FROM sessions
        WHERE user_id = $1 AND last_used_at >= $3 AND user_agent IS NOT DISTINCT FROM $2)
"""


def row_values(session: SessionRecord) -> list[Any]:
    """The session's columns (NAMES), as stored."""
    values = [_naive(getattr(session, name)) for name in NAMES]
    values[NAMES.index("amr")] = encode_amr(session.amr)
    return values


class PgSessions:
    def __init__(self, uow: PgUnitOfWork):
        self._uow = uow

    async def add(self, session: SessionRecord) -> None:
        await self._uow.run("execute", _INSERT, *row_values(session))

    async def get(self, session_id: str) -> SessionRecord | None:
        row = await self._uow.run("fetchrow", _SELECT + "id = $1", session_id)
        return None if row is None else _record(list(row.values()))

    async def list_live_for_user(self, user_id: str) -> list[SessionRecord]:
        rows = await self._uow.run(
            "fetch",
            _SELECT + "user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id DESC",
            user_id,
        )
        return [_record(list(row.values())) for row in rows]

    async def seen_since(
        self, user_id: str, user_agent: str | None, since: datetime
    ) -> tuple[bool, bool]:
        row = await self._uow.run("fetchrow", _SEEN, user_id, user_agent, _naive(since))
        return bool(row[0]), bool(row[1])

    async def touch(
        self, session_id: str, now: datetime, *, authenticated: bool = False
    ) -> tuple[SessionRecord, User] | None:
        row = await self._uow.run("fetchrow", _TOUCH, session_id, _naive(now), authenticated)
        if row is None:
            return None
        values, split = list(row.values()), len(NAMES)
        user = User(**dict(zip(_USER_NAMES, _aware(values[split:]), strict=True)))
        return _record(values[:split]), user

    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool:
        return await self._revoke(_REVOKE, session_id, now, reason) == 1

    async def revoke_user(self, user_id: str, now: datetime, reason: str) -> int:
        return await self._revoke(_REVOKE_USER, user_id, now, reason)

    async def _revoke(self, query: str, value: str, now: datetime, reason: str) -> int:
        status = await self._uow.run("execute", query, value, _naive(now), reason)
        return int(str(status).rsplit(" ", 1)[-1])

    async def rotate(self, step: RefreshStep) -> bool:
        times = (_naive(step.next_expires_at), _naive(step.session_end), _naive(step.now))
        args = (step.session_id, step.generation, step.current_hash, step.next_hash, *times)
        return str(await self._uow.run("execute", _ROTATE, *args)) == "UPDATE 1"
