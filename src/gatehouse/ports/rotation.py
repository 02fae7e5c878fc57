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
    """What `sessions.flow.refresh` writes when the presented token is good: that token marked
    used at `now`, its session touched, a new token of its family (`replacement_*`; it expires
    at `replacement_expires_at` or the family's end, whichever is first), and `record`, whose
    user and actor are the token's user."""

    presented_hash: str
    now: datetime
    replacement_id: str
    replacement_hash: str
    replacement_expires_at: datetime
    record: AuditEntry


class Rotations(Protocol):
    async def rotate(self, rotation: Rotation) -> tuple[SessionRecord, User] | None:
        """All of it at once, if the presented token is unused, unrevoked and unexpired, its
        session live and its user enabled: the session (touched) and its user. Otherwise None
        and nothing written: the ordinary path then tells the cases apart."""
