"""A `send-otp` message's delivery states, as the courier's record keeps them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A message's states, each the string the `deliveries.status` column holds for it."""

    QUEUED = "queued"  # known, nobody on it: released by a stopping courier (or no row at all)
    SENDING = "sending"  # a courier holds its lease
    SENT = "sent"  # final, like ABANDONED
    ABANDONED = "abandoned"


FINAL = frozenset({Status.SENT, Status.ABANDONED})
