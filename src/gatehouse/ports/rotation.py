"""A refresh's ordinary outcome written in one step, as a port (DESIGN 2: a path around the
ordinary one, derived from it): `storage/pg_refresh.py` on PostgreSQL, none elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatehouse.domain.audit import AuditEntry
from gatehouse.domain.sessions import SessionRecord
from gatehouse.domain.users import User


@dataclass(frozen=True)
class Rotation:
    """What `sessions.rotation.refresh` writes when the presented token is good (generation
    `generation` of session `session_id`'s token, whose keyed hash is `presented_hash`): the
    session's token moved to the next generation (`replacement_hash`, expiring at
    `replacement_expires_at` or the session's end, whichever is first), the session touched at
    `now`, and `record`, whose user and actor are the session's user."""

    session_id: str
    generation: int
    presented_hash: str
    now: datetime
    replacement_hash: str
    replacement_expires_at: datetime
    record: AuditEntry


class Rotations(Protocol):
    async def rotate(self, rotation: Rotation) -> tuple[SessionRecord, User] | None:
        """All of it at once, if the presented token is the session's current one and
        unexpired, the session live and unexpired, and its user enabled: the session (touched)
        and its user. Otherwise None and nothing written: the ordinary path then tells the
        cases apart."""
