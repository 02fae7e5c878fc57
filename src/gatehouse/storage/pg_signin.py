"""A password sign-in in one statement on PostgreSQL (`ports.signin`): one round trip where the
ordinary path (`login.flow.login` over the unit of work) needs seven (BEGIN, the account's
factors, its devices, the session, the event, the audit record, COMMIT). Under load those round
trips cost PostgreSQL more CPU than the writes themselves, and a login's budget beside its
password hash is small (issue 17: logins within 5 % of the raw argon2id rate).

Every write hangs off the session's insert, and the insert off one read of the user that holds
each condition of the ordinary path's plain outcome: enabled, no factor finishing a sign-in, a
known device (`notices.is_new_device`). Any other outcome writes nothing and answers False: the
ordinary path then does what it always did (the challenge, the new-device notice). Reads and
writes are one statement, so what was read is what decided, as in the ordinary path's
transaction (read committed: a factor added meanwhile is seen by neither)."""

from __future__ import annotations

from typing import Any

from gatehouse.ports.signin import SessionOpening
from gatehouse.storage.pg import PgDatabase, PgUnitOfWork, _naive
from gatehouse.storage.pg_audit import NAMES as _AUDIT
from gatehouse.storage.pg_audit import record_args
from gatehouse.storage.pg_sessions import NAMES as _SESSION
from gatehouse.storage.pg_sessions import row_values

_P = {name: f"${i}" for i, name in enumerate(_SESSION, start=1)}
_DEVICE, _SINCE = f"${len(_SESSION) + 1}", f"${len(_SESSION) + 2}"
_EVENT = [f"${len(_SESSION) + 3 + i}" for i in range(5)]  # id, topic, key, payload, created
_RECORD = [f"${len(_SESSION) + 8 + i}" for i in range(len(_AUDIT))]
_USER = _P["user_id"]

OPEN = f"""
WITH usr AS MATERIALIZED (
    SELECT u.id FROM users u
    WHERE u.id = {_USER} AND u.disabled_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM totp_factors t
          WHERE t.user_id = {_USER} AND t.confirmed_at IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM passkeys k WHERE k.user_id = {_USER})
      AND (EXISTS (SELECT 1 FROM sessions s WHERE s.user_id = {_USER}
              AND s.last_used_at >= {_SINCE}
              AND s.user_agent IS NOT DISTINCT FROM {_DEVICE}::text)
           OR (u.created_at >= {_SINCE} AND NOT EXISTS (SELECT 1 FROM sessions s
              WHERE s.user_id = {_USER} AND s.last_used_at >= {_SINCE})))
), opened AS (
    INSERT INTO sessions ({", ".join(_SESSION)}) SELECT {", ".join(_P.values())} FROM usr
    RETURNING id
), told AS (
    INSERT INTO outbox (id, topic, message_key, payload, created_at)
    SELECT {", ".join(_EVENT)} FROM opened RETURNING id
), recorded AS (
    INSERT INTO audit_log ({", ".join(_AUDIT)}) SELECT {", ".join(_RECORD)} FROM opened
    RETURNING id
)
SELECT count(*) FROM opened"""  # noqa: S608 - constants only


def arguments(opening: SessionOpening) -> list[Any]:
    """OPEN's parameters, in order."""
    event = opening.event
    return [
        *row_values(opening.session),
        opening.device,
        _naive(opening.since),
        event.id,
        event.topic,
        event.key,
        event.payload_text(),
        _naive(event.created_at),
        *record_args([opening.record]),
    ]


class PgSessionOpenings:
    def __init__(self, db: PgDatabase):
        self._db = db

    async def open(self, opening: SessionOpening) -> bool:
        # One statement is atomic on its own: a unit without a transaction (no BEGIN, no
        # COMMIT), for its handling of a pooled connection that died idle.
        async with PgUnitOfWork(self._db, read_only=True) as uow:
            return bool(await uow.run("fetchval", OPEN, *arguments(opening)))
