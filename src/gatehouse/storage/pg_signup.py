"""A verified sign-up in one statement on PostgreSQL (`ports.signup`): one round trip where the
ordinary path (`registration.flow.verify_sign_up` over the unit of work) needs seven (BEGIN, the
sign-up, the user, the event, the sign-up's removal, the audit record, COMMIT).

The user is made from the sign-up's row as the statement removes it, so a sign-up changed
meanwhile (made again, contested: same id) becomes the account it now describes. Every write
hangs off that removal: a sign-up gone or expired changes nothing, and an address taken
meanwhile fails the whole statement on the users' unique email."""

from __future__ import annotations

from dataclasses import fields

import asyncpg

from gatehouse.domain.users import PendingRegistration, User
from gatehouse.errors import AccountExists
from gatehouse.ports.signup import SignUpFinish
from gatehouse.storage.pg import PgDatabase, PgUnitOfWork, _aware, _naive
from gatehouse.storage.pg_audit import NAMES as _AUDIT
from gatehouse.storage.pg_audit import record_args

_USER = tuple(f.name for f in fields(User))
_KEPT = frozenset(f.name for f in fields(PendingRegistration)) & frozenset(_USER)
_AT_NOW = frozenset(("created_at", "updated_at", "email_verified_at"))
_USER_VALUES = ", ".join(
    f"p.{n}" if n in _KEPT and n not in _AT_NOW else "$2" if n in _AT_NOW else "NULL" for n in _USER
)
_EVENT_FIRST, _AUDIT_FIRST = 3, 8  # the event's five parameters, then the record's
FINISH = f"""
WITH p AS (
    DELETE FROM pending_registrations WHERE id = $1 AND expires_at > $2 RETURNING *
), u AS (
    INSERT INTO users ({", ".join(_USER)}) SELECT {_USER_VALUES} FROM p RETURNING *
), told AS (
    INSERT INTO outbox (id, topic, message_key, payload, created_at)
    SELECT ${_EVENT_FIRST}, ${_EVENT_FIRST + 1}, ${_EVENT_FIRST + 2}, ${_EVENT_FIRST + 3},
        ${_EVENT_FIRST + 4}
    FROM u RETURNING id
), recorded AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)})
    SELECT {", ".join(f"${_AUDIT_FIRST + i}" for i in range(len(_AUDIT)))} FROM u RETURNING id
)
SELECT u.* FROM u
"""  # noqa: S608 - constants only


class PgSignUpFinishes:
    def __init__(self, db: PgDatabase):
        self._db = db

    async def finish(self, done: SignUpFinish) -> User | None:
        event = done.event
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            try:
                row = await uow.run(
                    "fetchrow",
                    FINISH,
                    done.pending_id,
                    _naive(done.now),
                    event.id,
                    event.topic,
                    event.key,
                    event.payload_text(),
                    _naive(event.created_at),
                    *record_args([done.record]),
                )
            except asyncpg.UniqueViolationError as exc:
                raise AccountExists() from exc
        return None if row is None else User(**_aware(row))
