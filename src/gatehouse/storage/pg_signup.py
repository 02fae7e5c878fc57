"""A verified sign-up in one statement on PostgreSQL (`ports.signup`): one round trip where the
ordinary path (`registration.flow.verify_sign_up` over the unit of work) needs seven (BEGIN, the
sign-up, the user, the event, the sign-up's removal, the audit record, COMMIT).

The user is made from the sign-up's row as the statement removes it, so a sign-up changed
meanwhile (made again, contested: same id) becomes the account it now describes. Every write
hangs off that removal: a sign-up gone or expired changes nothing, and an address taken
meanwhile fails the whole statement on the users' unique email.

Concurrent verifies share a statement (`pg_batch.Batches`, as refreshes do: `pg_refresh.py`),
each sign-up its own chain of the steps above. An address taken meanwhile fails its batch,
which is then run again one sign-up at a time: only that one fails (409)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import fields
from functools import cache
from typing import Any

import asyncpg

from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import AccountExists
from gatehouse.ports.signup import SignUpFinish
from gatehouse.storage.pg import (
    OUTBOX_COLUMNS,
    PgDatabase,
    PgUnitOfWork,
    _aware,
    _naive,
    outbox_values,
)
from gatehouse.storage.pg_audit import NAMES as _AUDIT
from gatehouse.storage.pg_audit import record_args
from gatehouse.storage.pg_batch import Batches, not_for_all

_USER = tuple(f.name for f in fields(User))
_KEPT = frozenset(f.name for f in fields(PendingRegistration)) & frozenset(_USER)
_AT_NOW = frozenset(("created_at", "updated_at", "email_verified_at"))
# Parameters a sign-up: its id, now, the event's, the record's.
_EACH = 2 + len(OUTBOX_COLUMNS) + len(_AUDIT)


def _chain(n: int) -> str:
    """The CTEs finishing the statement's `n`th sign-up (from 0): `u{n}` is its user."""
    p = [f"${n * _EACH + i}" for i in range(1, _EACH + 1)]
    event_end = 2 + len(OUTBOX_COLUMNS)
    pending_id, now, event, record = p[0], p[1], p[2:event_end], p[event_end:]
    values = ", ".join(
        f"p{n}.{c}" if c in _KEPT and c not in _AT_NOW else now if c in _AT_NOW else "NULL"
        for c in _USER
    )
    return f"""
p{n} AS (
    DELETE FROM pending_registrations WHERE id = {pending_id} AND expires_at > {now} RETURNING *
), u{n} AS (
    INSERT INTO users ({", ".join(_USER)}) SELECT {values} FROM p{n} RETURNING *
), told{n} AS (
    INSERT INTO outbox ({", ".join(OUTBOX_COLUMNS)}) SELECT {", ".join(event)} FROM u{n}
    RETURNING id
), recorded{n} AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {", ".join(record)} FROM u{n} RETURNING id
)"""  # noqa: S608 - constants only


@cache
def finish_statement(count: int) -> str:
    """`count` sign-ups finished in one statement, each its own chain of steps off its own
    removal; one row for each finished: its number (from 0, `finished`), then its user."""
    answers = " UNION ALL ".join(
        f"SELECT {n} AS finished, {', '.join(f'u{n}.{c}' for c in _USER)} FROM u{n}"  # noqa: S608
        for n in range(count)
    )
    return "WITH" + ",".join(_chain(n) for n in range(count)) + "\n" + answers


def arguments(finishes: Sequence[SignUpFinish]) -> list[Any]:
    """finish_statement(len(finishes))'s parameters, in order."""
    values: list[Any] = []
    for done in finishes:
        values += (
            done.pending_id,
            _naive(done.now),
            *outbox_values(done.event),
            *record_args([done.record]),
        )
    return values


class PgSignUpFinishes:
    def __init__(self, db: PgDatabase, *, lanes: int = 2):
        self._db = db
        self._batches: Batches[SignUpFinish, User | None] = Batches(
            self._finish_all,
            lanes=lanes,
            key=lambda done: done.pending_id,
            fill=lambda done: dataclasses.replace(done, pending_id=""),  # no sign-up
            alone_after=not_for_all,
        )

    async def finish(self, done: SignUpFinish) -> User | None:
        try:
            return await self._batches(done)
        except asyncpg.UniqueViolationError as exc:  # alone: its own address was taken
            raise AccountExists() from exc

    async def _finish_all(self, finishes: list[SignUpFinish]) -> list[User | None]:
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            statement = finish_statement(len(finishes))
            rows = await uow.run("fetch", statement, *arguments(finishes))
        found: list[User | None] = [None] * len(finishes)
        for row in rows:
            values = _aware(row)
            n = values.pop("finished")
            found[n] = User(**values)
        return found
