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

Concurrent refreshes share a statement (`pg_batch.Batches`, up to 16 of them, each of another
session, in the order of their ids): one chain of the steps above for each, side by side, so
each keeps its own plan of id lookups. A statement's fixed cost (its round trip, its executor,
its commit) is then paid once for the batch: under load PostgreSQL spent a third less CPU a
refresh. A batch is one transaction; what is written is what the same refreshes one after the
other would write, and its filler rotations (session id "") match no row.

Since migration 0009 a refresh updates its session's row and reads its user: a token row and
its four index entries are no longer written at every rotation, nor the spent one marked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from functools import cache
from typing import Any

from gatehouse.domain.audit import AuditEntry
from gatehouse.domain.sessions import SessionRecord
from gatehouse.domain.users import User
from gatehouse.ports.rotation import Rotation
from gatehouse.storage.pg import PgDatabase, PgUnitOfWork
from gatehouse.storage.pg_batch import Batches, not_for_all
from gatehouse.storage.pg_sessions import NAMES as SESSION_NAMES
from gatehouse.storage.pg_sessions import _aware, _record

_USER_NAMES = tuple(f.name for f in fields(User))
_AUDIT = tuple(f.name for f in fields(AuditEntry))
# The record's own values are parameters; its user and actor come from the session.
_FROM_SESSION = ("user_id", "actor_id")
_GIVEN = [name for name in _AUDIT if name not in _FROM_SESSION]
_EACH = 6 + len(_GIVEN)  # parameters a rotation


def _chain(n: int) -> str:
    """The CTEs rotating the statement's `n`th session (from 0): `usr{n}`, `touched{n}`."""
    p = [f"${n * _EACH + i}" for i in range(1, _EACH + 1)]
    sid, gen, presented, now, next_hash, next_expires = p[:6]
    values = ", ".join(
        f"touched{n}.user_id" if name in _FROM_SESSION else p[6 + _GIVEN.index(name)]
        for name in _AUDIT
    )
    return f"""
usr{n} AS MATERIALIZED (
    SELECT {", ".join(f"u.{c}" for c in _USER_NAMES)} FROM users u
    WHERE u.id = (SELECT user_id FROM sessions WHERE id = {sid}) AND u.disabled_at IS NULL
), touched{n} AS (
    UPDATE sessions s SET refresh_generation = {gen} + 1, refresh_hash = {next_hash},
        refresh_expires_at = LEAST({next_expires}, s.expires_at), last_used_at = {now}
    WHERE s.id = {sid} AND s.refresh_generation = {gen} AND s.refresh_hash = {presented}
      AND s.revoked_at IS NULL AND s.refresh_expires_at > {now} AND s.expires_at > {now}
      AND EXISTS (SELECT 1 FROM usr{n})
    RETURNING {", ".join(f"s.{c}" for c in SESSION_NAMES)}
), recorded{n} AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {values} FROM touched{n} RETURNING id
)"""  # noqa: S608 - constants only


@cache
def rotate_statement(count: int) -> str:
    """`count` rotations in one statement: each its own chain of steps, each step keyed by an
    id; one row for each rotated, its number (from 0) first."""
    columns = [f"touched{{n}}.{c}" for c in SESSION_NAMES] + [f"usr{{n}}.{c}" for c in _USER_NAMES]
    answer = "SELECT {n}, " + ", ".join(columns) + " FROM touched{n}, usr{n}"  # noqa: S608
    answers = " UNION ALL ".join(answer.format(n=n) for n in range(count))
    return "WITH" + ",".join(_chain(n) for n in range(count)) + "\n" + answers


def _naive(value: Any) -> Any:
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


def arguments(rotations: Sequence[Rotation]) -> list[Any]:
    """rotate_statement(len(rotations))'s parameters, in order."""
    return [
        value
        for rotation in rotations
        for value in (
            rotation.session_id,
            rotation.generation,
            rotation.presented_hash,
            _naive(rotation.now),
            rotation.replacement_hash,
            _naive(rotation.replacement_expires_at),
            *(_naive(getattr(rotation.record, name)) for name in _GIVEN),
        )
    ]


Rotated = tuple[SessionRecord, User] | None


class PgRotations:
    def __init__(self, db: PgDatabase, *, lanes: int = 2):
        self._db = db
        self._batches: Batches[Rotation, Rotated] = Batches(
            self._rotate_all,
            lanes=lanes,
            key=lambda rotation: rotation.session_id,
            fill=lambda rotation: dataclasses.replace(rotation, session_id=""),  # no session
            alone_after=not_for_all,
        )

    async def rotate(self, rotation: Rotation) -> Rotated:
        return await self._batches(rotation)

    async def _rotate_all(self, rotations: list[Rotation]) -> list[Rotated]:
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            statement = rotate_statement(len(rotations))
            rows = await uow.run("fetch", statement, *arguments(rotations))
        found: list[Rotated] = [None] * len(rotations)
        split = 1 + len(SESSION_NAMES)
        for row in rows:
            values = list(row.values())
            user = User(**dict(zip(_USER_NAMES, _aware(values[split:]), strict=True)))
            found[values[0]] = (_record(values[1:split]), user)
        return found
