"""Password recovery on the queues: `password-recovery`, whose job name (`request`, `reset`)
picks the step."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.recovery.schemas import RecoveryRequestJob, RecoveryResetJob


async def request(ctx: FlowContext, job: RecoveryRequestJob, job_id: str | None) -> Result:
    ttl = await recovery.request(
        ctx, email=str(job.email) if job.email else None, phone=job.phone, channel=job.channel
    )
    return ok("If the account exists, a reset code has been sent", {"expires_in": ttl})


async def reset(ctx: FlowContext, job: RecoveryResetJob, job_id: str | None) -> Result:
    user_id = await recovery.reset(
        ctx,
        otp=job.otp,
        new_password=job.new_password,
        email=str(job.email) if job.email else None,
        phone=job.phone,
    )
    return ok("Password reset; please log in again", {}, user_id)


HANDLERS: dict[str, Handler] = {
    "password-recovery:request": (RecoveryRequestJob, request),
    "password-recovery:reset": (RecoveryResetJob, reset),
}
