"""A refresh's ordinary outcome in one statement on PostgreSQL (`ports.rotation`): one round trip
where the ordinary path (`sessions.rotation.refresh` over the unit of work) needs six (BEGIN, the
session, its rotation, its touch with the user, the audit record, COMMIT), and the largest
share of a refresh's cost, on both sides of the connection.

The session's user is read first, by the id in the session's row, then the row is updated only
under every condition of the ordinary path at once (the presented token its current generation,
by hash; unexpired; the session live and unexpired; that user enabled): each step keyed by an
id, so the plan never depends on the planner's guesses (as one join, tables never analysed got
a plan that scanned the users). A concurrent refresh of the same token or a concurrent logout
either went first (the row no longer matches: nothing is written, the ordinary path answers)
or waits for this one. The audit record hangs off the update: without it, nothing changes.

Since migration 0009 a refresh updates its session's row and reads its user: a token row and
its four index entries are no longer written at every rotation, nor the spent one marked."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from gatehouse.domain.audit import AuditEntry
from gatehouse.domain.sessions import SessionRecord
from gatehouse.domain.users import User
from gatehouse.ports.rotation import Rotation
from gatehouse.storage.pg import PgDatabase, PgUnitOfWork
from gatehouse.storage.pg_sessions import NAMES as SESSION_NAMES
from gatehouse.storage.pg_sessions import _aware, _record

_USER_NAMES = tuple(f.name for f in fields(User))
_AUDIT = tuple(f.name for f in fields(AuditEntry))
# The record's own values are parameters $7...; its user and actor come from the session.
_FROM_SESSION = ("user_id", "actor_id")
_GIVEN = [name for name in _AUDIT if name not in _FROM_SESSION]
_AUDIT_VALUES = ", ".join(
    "touched.user_id" if name in _FROM_SESSION else f"${7 + _GIVEN.index(name)}" for name in _AUDIT
)
ROTATE = f"""
WITH usr AS MATERIALIZED (
    SELECT {", ".join(f"u.{n}" for n in _USER_NAMES)} FROM users u
    WHERE u.id = (SELECT user_id FROM sessions WHERE id = $1) AND u.disabled_at IS NULL
), touched AS (
    UPDATE sessions s SET refresh_generation = $2 + 1, refresh_hash = $5,
        refresh_expires_at = LEAST($6, s.expires_at), last_used_at = $4
    WHERE s.id = $1 AND s.refresh_generation = $2 AND s.refresh_hash = $3
      AND s.revoked_at IS NULL AND s.refresh_expires_at > $4 AND s.expires_at > $4
      AND EXISTS (SELECT 1 FROM usr)
    RETURNING {", ".join(f"s.{n}" for n in SESSION_NAMES)}
), recorded AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {_AUDIT_VALUES} FROM touched RETURNING id
)
SELECT {", ".join([f"touched.{n}" for n in SESSION_NAMES] + [f"usr.{n}" for n in _USER_NAMES])}
FROM touched, usr
"""  # noqa: S608 - constants only


def _naive(value: Any) -> Any:
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


def arguments(rotation: Rotation) -> list[Any]:
    """ROTATE's parameters for `rotation`, in order."""
    record = [_naive(getattr(rotation.record, name)) for name in _GIVEN]
    return [
        rotation.session_id,
        rotation.generation,
        rotation.presented_hash,
        _naive(rotation.now),
        rotation.replacement_hash,
        _naive(rotation.replacement_expires_at),
        *record,
    ]


class PgRotations:
    def __init__(self, db: PgDatabase):
        self._db = db

    async def rotate(self, rotation: Rotation) -> tuple[SessionRecord, User] | None:
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            row = await uow.run("fetchrow", ROTATE, *arguments(rotation))
        if row is None:
            return None
        values, split = list(row.values()), len(SESSION_NAMES)
        user = User(**dict(zip(_USER_NAMES, _aware(values[split:]), strict=True)))
        return _record(values[:split]), user
