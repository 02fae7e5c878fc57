"""The `Sessions` repository on SQLAlchemy (SQLite, MariaDB/MySQL, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, exists, insert, select, update

from gatehouse.domain.sessions import RefreshStep, SessionRecord, decode_amr, encode_amr
from gatehouse.domain.users import User
from gatehouse.storage.schema import sessions, users

if TYPE_CHECKING:
    from gatehouse.storage.sql import Executor

NAMES = tuple(c.name for c in sessions.c)  # in the order of SessionRecord's fields
_USER_NAMES = tuple(c.name for c in users.c)
_LIVE = sessions.c.revoked_at.is_(None)
# Built once: composing a statement costs more Python than sending it (refresh runs this one).
_LIVE_WITH_USER = (
    select(sessions, users)
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.id == bindparam("session_id"), _LIVE, users.c.disabled_at.is_(None))
)
_INSERT = insert(sessions)


def to_record(values: Sequence[Any]) -> SessionRecord:
    """A record from a row's values in the table's column order (the `amr` JSON decoded)."""
    found = dict(zip(NAMES, values, strict=True))
    found["amr"] = decode_amr(found["amr"])
    return SessionRecord(**found)


def to_row(session: SessionRecord) -> dict[str, Any]:
    return {name: getattr(session, name) for name in NAMES} | {"amr": encode_amr(session.amr)}


class SqlSessions:
    def __init__(self, conn: Executor):
        self._conn = conn

    async def add(self, session: SessionRecord) -> None:
        await self._conn.execute(_INSERT, to_row(session))

    async def get(self, session_id: str) -> SessionRecord | None:
        query = select(sessions).where(sessions.c.id == session_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else to_record(row)

    async def list_live_for_user(self, user_id: str) -> list[SessionRecord]:
        query = (
            select(sessions)
            .where(sessions.c.user_id == user_id, _LIVE)
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
        )
        return [to_record(row) for row in await self._conn.execute(query)]

    async def seen_since(
        self, user_id: str, user_agent: str | None, since: datetime
    ) -> tuple[bool, bool]:
        used = and_(sessions.c.user_id == user_id, sessions.c.last_used_at >= since)
        same = sessions.c.user_agent.is_not_distinct_from(user_agent)
        query = select(exists().where(used), exists().where(used, same))
        row: Any = (await self._conn.execute(query)).one()  # the stubs see one column
        return bool(row[0]), bool(row[1])

    async def touch(
        self, session_id: str, now: datetime, *, authenticated: bool = False
    ) -> tuple[SessionRecord, User] | None:
        # Two statements: MariaDB has no UPDATE ... RETURNING (pg.py makes it one).
        values = {"last_used_at": now, **({"auth_time": now} if authenticated else {})}
        await self._conn.execute(
            update(sessions).where(sessions.c.id == session_id, _LIVE).values(values)
        )
        row = (await self._conn.execute(_LIVE_WITH_USER, {"session_id": session_id})).first()
        if row is None:
            return None
        split = len(NAMES)
        return to_record(row[:split]), User(**dict(zip(_USER_NAMES, row[split:], strict=True)))

    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool:
        return await self._revoke(sessions.c.id == session_id, now, reason) == 1

    async def revoke_user(self, user_id: str, now: datetime, reason: str) -> int:
        return await self._revoke(sessions.c.user_id == user_id, now, reason)

    async def _revoke(self, where: Any, now: datetime, reason: str) -> int:
        result = await self._conn.execute(
            update(sessions).where(where, _LIVE).values(revoked_at=now, revoked_reason=reason)
        )
        return int(result.rowcount)

    async def rotate(self, step: RefreshStep) -> bool:
        result = await self._conn.execute(
            update(sessions)
            .where(
                sessions.c.id == step.session_id,
                sessions.c.refresh_generation == step.generation,
                sessions.c.refresh_hash.is_not_distinct_from(step.current_hash),
                _LIVE,
            )
            .values(
                refresh_generation=step.generation + 1,
                refresh_hash=step.next_hash,
                refresh_expires_at=step.next_expires_at,
                expires_at=step.session_end,
                last_used_at=step.now,
            )
        )
        return int(result.rowcount) == 1
