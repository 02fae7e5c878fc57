"""Queue jobs → flows: the one dispatcher every worker (BullMQ or embedded) calls.

A job's answer is `{success, message, data}`. Business refusals (bad input, wrong code, expired
or forged token) complete with `success: false` and are not retried; infrastructure failures
(`errors.Unavailable` and anything unexpected) raise, so the queue retries them with backoff."""

from __future__ import annotations

from typing import Any

from gatehouse.flows.context import FlowContext

QUEUES = (
    "verification",
    "create-user",
    "verify-user",
    "read-user",
    "update-user",
    "delete-user",
    "password-recovery",
)


async def handle_job(ctx: FlowContext, queue: str, name: str, data: Any) -> dict[str, Any]:
    raise NotImplementedError  # filled in by the flows of issue 3


def notification_room(data: Any, result: dict[str, Any]) -> str | None:
    """The Socket.IO room a job's result may be pushed to, or None (no `notify`, or refused).

    `notify` is a client's sid or `user:<id>`; a `user:` room is allowed only for the user the
    job acted on, so a producer cannot push one account's data into another's sockets."""
    raise NotImplementedError
