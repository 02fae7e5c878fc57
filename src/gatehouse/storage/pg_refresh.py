"""A refresh's ordinary outcome in one statement on PostgreSQL (`ports.rotation`): one round trip
where the ordinary path (`sessions.flow.refresh` over the unit of work) needs seven (BEGIN, the
token, its mark, the session, the new token, the audit record, COMMIT), and the largest share
of a refresh's cost, on both sides of the connection.

The candidate row is chosen with every condition of the ordinary path at once (token unused,
unrevoked, unexpired; its session live; its user enabled) and locked with its session, so a
concurrent refresh of the same token or a concurrent logout either went first (the candidate
is gone: nothing is written, the ordinary path answers) or waits for this one. Every write
hangs off the candidate: without one, the statement changes nothing.

The token is found first, by its hash, then its session by its id, then its user by theirs:
each a step of its own (materialised), keyed by the one before, so the plan never depends on
the planner's guesses. As one join, a young database's tables (never analysed, every count
guessed at 1) got a plan that started from the users and probed the token's index once for
every live session: PostgreSQL's CPU a refresh grew with the sessions, 1.1 to 1.8 ms at 64 to
192 of them, 0.44 to 0.6 ms now."""

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
# The record's own values are parameters $6...; its user and actor come from the candidate.
_FROM_CANDIDATE = ("user_id", "actor_id")
_GIVEN = [name for name in _AUDIT if name not in _FROM_CANDIDATE]
_AUDIT_VALUES = ", ".join(
    "cand.user_id" if name in _FROM_CANDIDATE else f"${6 + _GIVEN.index(name)}" for name in _AUDIT
)
ROTATE = f"""
WITH tok AS MATERIALIZED (
    SELECT t.id AS token_id, t.family_id, t.family_expires_at
    FROM refresh_tokens t
    WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.revoked_at IS NULL
      AND t.expires_at > $2 AND t.family_expires_at > $2
    FOR UPDATE
), ses AS MATERIALIZED (
    SELECT s.id, s.user_id FROM sessions s
    WHERE s.id = (SELECT family_id FROM tok) AND s.revoked_at IS NULL
    FOR UPDATE
), usr AS MATERIALIZED (
    SELECT {", ".join(f"u.{n}" for n in _USER_NAMES)} FROM users u
    WHERE u.id = (SELECT user_id FROM ses) AND u.disabled_at IS NULL
), cand AS MATERIALIZED (
    SELECT tok.token_id, tok.family_id, tok.family_expires_at, usr.id AS user_id
    FROM tok, ses, usr
), used AS (
    UPDATE refresh_tokens r SET used_at = $2 FROM cand WHERE r.id = cand.token_id RETURNING r.id
), touched AS (
    UPDATE sessions SET last_used_at = $2 FROM cand WHERE sessions.id = cand.family_id
    RETURNING sessions.*
), added AS (
    INSERT INTO refresh_tokens
        (id, family_id, user_id, token_hash, created_at, expires_at, family_expires_at)
    SELECT $3, cand.family_id, cand.user_id, $4, $2, LEAST($5, cand.family_expires_at),
        cand.family_expires_at
    FROM cand RETURNING id
), recorded AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {_AUDIT_VALUES} FROM cand RETURNING id
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
        rotation.presented_hash,
        _naive(rotation.now),
        rotation.replacement_id,
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
