"""A password sign-in's ordinary outcome written in one step, as a port (DESIGN 2: a path around
the ordinary one, derived from it, as `ports.rotation` and `ports.signup`): `storage/pg_signin.py`
on PostgreSQL, none elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from gatehouse.domain.audit import AuditEntry
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.sessions import SessionRecord


@dataclass(frozen=True)
class SessionOpening:
    """What `login.flow.login` writes once the password is right, when nothing else is asked:
    `session` added, `event` to the outbox, `record` to the audit trail. Only when, at the
    write, the session's user is still enabled, still has `password_hash` (the one the password
    was checked against), has no factor that finishes a sign-in (a
    confirmed TOTP, a passkey: `login.second.FINISHING`) and signs in from a known device: one
    whose user agent (the session's, as stored) a session of the account used since `since`,
    or any device of an account made since then that no session has used yet
    (`notices.is_new_device`'s rule)."""

    session: SessionRecord
    password_hash: str
    since: datetime
    event: OutboxMessage
    record: AuditEntry


class Opened(Enum):
    OPENED = "opened"  # all of it written
    DISABLED = "disabled"  # the account was disabled (or deleted) since it was read: nothing
    CHANGED = "changed"  # its password was changed since it was read: nothing
    OTHER = "other"  # another outcome is due (a second factor, a new device): nothing


class SessionOpenings(Protocol):
    async def open(self, opening: SessionOpening) -> Opened:
        """All of it at once when every condition holds. Otherwise nothing written, and why:
        the flow refuses a disabled account or a changed password, and takes its ordinary path
        for any other outcome (it asks for the second factor, or tells of the new device)."""
