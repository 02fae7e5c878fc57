"""Sessions: one sign-in (one refresh-token family), the factors it proved, and how recently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

USER_AGENT_LENGTH = 256  # the column's: a longer header is cut, never refused
PWD = "pwd"  # noqa: S105 - RFC 8176 method reference: a password was proved
AAL1 = 1  # NIST 800-63B assurance level of a password alone


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored session; `id` is its refresh-token family's id and its access tokens' `sid`.
    Revoked sessions are kept (with when and why), so their tokens stay refused."""

    id: str
    user_id: str
    created_at: datetime
    last_used_at: datetime  # the last refresh (or the sign-in)
    auth_time: datetime  # when this session last proved a factor
    user_agent: str | None = None
    amr: tuple[str, ...] = (PWD,)
    aal: int = AAL1
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    # Its refresh token (`tokens.SessionRefresh`, migration 0009): the current generation, its
    # keyed hash and expiry, and the session's own end (the family's, which no rotation moves).
    # Generation 0 without a hash: a session opened before, whose tokens are refresh_tokens rows.
    refresh_generation: int = 0
    refresh_hash: str | None = None
    refresh_expires_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RefreshStep:
    """A session's refresh token moved on by one generation: from `generation`, whose hash the
    row keeps as `current_hash` (None while the session's token is still a refresh_tokens row),
    to the next one, `next_hash`, expiring at `next_expires_at`; `session_end` is the session's
    own end, and `now` when it was used."""

    session_id: str
    generation: int
    current_hash: str | None
    next_hash: str
    next_expires_at: datetime
    session_end: datetime
    now: datetime


def clip_user_agent(value: str | None) -> str | None:
    """The user agent as kept: printable characters only, at most 256 of them; None if empty."""
    if not value:
        return None
    clean = "".join(c for c in value if c.isprintable())[:USER_AGENT_LENGTH].strip()
    return clean or None


def encode_amr(amr: tuple[str, ...]) -> str:
    """The `amr` column's text: a JSON list, readable by any client of the database."""
    return json.dumps(list(amr), separators=(",", ":"))


def decode_amr(text: str) -> tuple[str, ...]:
    return tuple(str(value) for value in json.loads(text))


def is_recent(auth_time: datetime | None, now: datetime, window: timedelta) -> bool:
    """Whether a factor was proved within `window` before `now` (sensitive changes need it)."""
    return auth_time is not None and now - window <= auth_time


def is_alive(session: SessionRecord, now: datetime, idle: timedelta, lifetime: timedelta) -> bool:
    """Not revoked, and its refresh tokens not all expired: one is left unused at most `idle`
    after the last refresh, and none outlives `lifetime` from the sign-in."""
    return (
        session.revoked_at is None
        and session.last_used_at + idle > now
        and session.created_at + lifetime > now
    )
