"""The queue names, one per service of seed 004: producers, workers and admin doors share them."""

from __future__ import annotations

QUEUES = (
    "verification",
    "create-user",
    "verify-user",
    "read-user",
    "update-user",
    "delete-user",
    "password-recovery",
    "sessions",
)
