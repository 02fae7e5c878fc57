"""A password sign-in in one statement on PostgreSQL (`ports.signin`): one round trip where the
ordinary path (`login.flow.login` over the unit of work) needs seven (BEGIN, the account's
factors, its devices, the session, the event, the audit record, COMMIT). Under load those round
trips cost PostgreSQL more CPU than the writes themselves, and a login's budget beside its
password hash is small (issue 17: logins within 5 % of the raw argon2id rate).

Every write hangs off the session's insert, and the insert off one read of the user that holds
each condition of the ordinary path's plain outcome: enabled, no factor finishing a sign-in
(`login.second.FINISHING`), a known device (`notices.is_new_device`). Any other outcome writes
nothing and says which: the flow refuses a disabled account and takes its ordinary path for
the rest (the challenge, the new-device notice).

The user's row is read FOR SHARE, and must still hold the hash the password was checked against:
a disable, a deletion or a new password committing meanwhile either went first (seen: the
sign-in refused) or waits for this statement, so its ending of every session sees this one."""

from __future__ import annotations

from functools import cache
from itertools import count
from typing import Any

from gatehouse.ports.signin import Opened, SessionOpening
from gatehouse.storage.pg import OUTBOX_COLUMNS, PgDatabase, PgUnitOfWork, _naive, outbox_values
from gatehouse.storage.pg_audit import NAMES as _AUDIT
from gatehouse.storage.pg_audit import record_args
from gatehouse.storage.pg_sessions import NAMES as _SESSION
from gatehouse.storage.pg_sessions import row_values

# Each factor that finishes a sign-in (`login.second.FINISHING`, held equal by a test): the
# account has one when its query finds a row.
_FACTOR_ROWS = {
    "totp": "SELECT 1 FROM totp_factors t WHERE t.user_id = {user} AND t.confirmed_at IS NOT NULL",
    "passkey": "SELECT 1 FROM passkeys k WHERE k.user_id = {user}",
}
FINISHING = tuple(_FACTOR_ROWS)


@cache
def open_statement() -> str:
    """The statement; its parameters are `arguments`'s, in that order."""
    numbers = (f"${n}" for n in count(1))
    session = {name: next(numbers) for name in _SESSION}
    password_hash, since = next(numbers), next(numbers)
    event = [next(numbers) for _ in OUTBOX_COLUMNS]
    record = [next(numbers) for _ in _AUDIT]
    user, device = session["user_id"], session["user_agent"]
    factors = " AND ".join(
        f"NOT EXISTS ({rows.format(user=user)})" for rows in _FACTOR_ROWS.values()
    )
    return f"""
WITH me AS MATERIALIZED (
    SELECT id, created_at, disabled_at,
        password_hash IS NOT DISTINCT FROM {password_hash}::text AS same_password
    FROM users WHERE id = {user} FOR SHARE
), usr AS MATERIALIZED (
    SELECT me.id FROM me
    WHERE me.disabled_at IS NULL AND me.same_password
      AND {factors}
      AND (EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = {user}
              AND s.last_used_at >= {since}
              AND s.user_agent IS NOT DISTINCT FROM {device}::text)
           OR (me.created_at >= {since} AND NOT EXISTS (SELECT 1 FROM sessions s
              WHERE s.user_id = {user} AND s.last_used_at >= {since})))
), opened AS (
    INSERT INTO sessions ({", ".join(_SESSION)}) SELECT {", ".join(session.values())} FROM usr
    RETURNING id
), told AS (
    INSERT INTO outbox ({", ".join(OUTBOX_COLUMNS)}) SELECT {", ".join(event)} FROM opened
    RETURNING id
), recorded AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {", ".join(record)} FROM opened
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM opened) AS opened,
    EXISTS (SELECT 1 FROM me WHERE me.disabled_at IS NULL) AS enabled,
    EXISTS (SELECT 1 FROM me WHERE me.same_password) AS same_password"""  # noqa: S608


def arguments(opening: SessionOpening) -> list[Any]:
    """open_statement()'s parameters, in order."""
    return [
        *row_values(opening.session),
        opening.password_hash,
        _naive(opening.since),
        *outbox_values(opening.event),
        *record_args([opening.record]),
    ]


class PgSessionOpenings:
    def __init__(self, db: PgDatabase):
        self._db = db

    async def open(self, opening: SessionOpening) -> Opened:
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            row = await uow.run("fetchrow", open_statement(), *arguments(opening))
        if row["opened"]:
            return Opened.OPENED
        if not row["enabled"]:
            return Opened.DISABLED
        return Opened.OTHER if row["same_password"] else Opened.CHANGED
