"""Queue jobs → flows: the one dispatcher every worker (BullMQ or embedded) calls; each flow's
`job.py` holds its queue's handler.

A job's answer is `{success, message, data}` (plus `code` and `errors` on refusals, and
`user_id` when the job acted on a known account). Business refusals (bad input, wrong code,
expired or forged token) complete with `success: false` and are not retried; infrastructure
failures (`errors.Unavailable` and anything unexpected) raise, so the queue retries them."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError

from gatehouse.errors import GatehouseError, InvalidInput, TokenError, Unavailable
from gatehouse.jobs.queues import QUEUES
from gatehouse.jobs.results import Handler, Result, refusal
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import job as login_job
from gatehouse.selfservice.mfa import job as mfa_job
from gatehouse.selfservice.profile import job as profile_job
from gatehouse.selfservice.recovery import job as recovery_job
from gatehouse.selfservice.registration import job as registration_job
from gatehouse.selfservice.sessions import job as sessions_job
from gatehouse.selfservice.verification import job as verification_job

__all__ = ["HANDLERS", "QUEUES", "handle_job", "notification_room"]

HANDLERS: dict[str, Handler] = {
    **verification_job.HANDLERS,
    **registration_job.HANDLERS,
    **login_job.HANDLERS,
    **profile_job.HANDLERS,
    **recovery_job.HANDLERS,
    **sessions_job.HANDLERS,
    **mfa_job.HANDLERS,
}
# Queues whose job name picks the step (`queue:name` in HANDLERS), with the names they take.
STEPS = {
    "password-recovery": "request or reset",
    "sessions": "list or revoke",
    "mfa": "totp-setup, totp-confirm, totp-remove or recovery-codes",
}


async def handle_job(
    ctx: FlowContext, queue: str, name: str, data: Any, job_id: str | None = None
) -> Result:
    key = f"{queue}:{name}" if queue in STEPS else queue
    handler = HANDLERS.get(key)
    if handler is None:
        known = STEPS.get(queue, "a known queue")
        return refusal(InvalidInput(f"Unknown job {name!r} on queue {queue!r}: use {known}"))
    model, run = handler
    if not isinstance(data, dict):
        return refusal(InvalidInput("Job data must be a JSON object"))
    try:
        job = model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "data", "message": e["msg"]}
            for e in exc.errors()
        ]
        return refusal(InvalidInput("Some fields are invalid", errors=errors))
    try:
        return await run(ctx, job, job_id)
    except Unavailable:
        raise  # retried by the queue with backoff
    except GatehouseError as exc:
        result = refusal(exc)
        token = getattr(job, "token", None)
        if token:  # the account the refusal concerns, so its own sockets may hear of it
            # A forged or expired token gets no user room at all.
            with contextlib.suppress(TokenError):
                result["user_id"] = ctx.tokens.verify(token, ctx.clock()).sub
        return result


def notification_room(data: Any, result: dict[str, Any]) -> str | None:
    """The Socket.IO room a job's result may be pushed to, or None (no `notify`, or refused).

    `notify` is a client's sid or `user:<id>`; a `user:` room is allowed only for the user the
    job acted on, so a producer cannot push one account's data into another's sockets."""
    notify = data.get("notify") if isinstance(data, dict) else None
    if not isinstance(notify, str) or not notify or len(notify) > 200:
        return None
    if notify.startswith("user:"):
        return notify if result.get("user_id") and notify == f"user:{result['user_id']}" else None
    return notify
