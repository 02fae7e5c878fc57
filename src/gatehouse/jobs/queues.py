"""The queue names, one per service of seed 004 and one per newer flow (`sessions`, `mfa`):
producers, workers and admin doors share them."""

from __future__ import annotations

from gatehouse.errors import NotFound

QUEUES = (
    "verification",
    "create-user",
    "verify-user",
    "read-user",
    "update-user",
    "delete-user",
    "password-recovery",
    "sessions",
    "mfa",
)


def known_queue(queue: str) -> str:
    """`queue` if it is one of ours; 404 (NotFound) naming the queues otherwise."""
    if queue not in QUEUES:
        raise NotFound(f"Unknown queue {queue!r}; queues: {', '.join(QUEUES)}")
    return queue
