"""A verified sign-up's ordinary outcome written in one step, as a port (DESIGN 2: a path around
the ordinary one, derived from it, as `ports.rotation`): `storage/pg_signup.py` on PostgreSQL,
none elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatehouse.domain.audit import AuditEntry
from gatehouse.domain.events import OutboxMessage
from gatehouse.domain.users import User


@dataclass(frozen=True)
class SignUpFinish:
    """What `registration.flow.verify_sign_up` writes once the code is right: the sign-up
    `pending_id`, still live at `now`, removed and made the user of the same id (its email
    verified at `now`, made and updated then), `event` to the outbox and `record` to the audit
    trail."""

    pending_id: str
    now: datetime
    event: OutboxMessage
    record: AuditEntry


class SignUpFinishes(Protocol):
    async def finish(self, done: SignUpFinish) -> User | None:
        """All of it at once if the sign-up is still there and live: the new user. Otherwise
        None and nothing written (the sign-up ended meanwhile). AccountExists if its address
        became an account's meanwhile, and nothing written."""
