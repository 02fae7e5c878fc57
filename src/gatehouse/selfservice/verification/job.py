"""The `verification` queue: a code sent on the channel asked for."""

from __future__ import annotations

from pydantic import ValidationError

from gatehouse.errors import InvalidInput
from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.recovery.schemas import RecoveryRequestJob
from gatehouse.selfservice.verification import flow as verification
from gatehouse.selfservice.verification.schemas import VerificationJob


async def send(ctx: FlowContext, job: VerificationJob, job_id: str | None) -> Result:
    to = _email(job.to) if job.channel == "email" else job.to
    ttl = await verification.send_code(ctx, channel=job.channel, to=to, purpose=job.purpose)
    return ok("Verification code sent", {"expires_in": ttl})


def _email(value: str) -> str:
    """`to` read as an email address, with the same rules as every email field."""
    try:
        return str(RecoveryRequestJob.model_validate({"email": value}).email)
    except ValidationError:
        raise InvalidInput(
            "Invalid email address", errors=[{"field": "to", "message": "invalid"}]
        ) from None


HANDLERS: dict[str, Handler] = {"verification": (VerificationJob, send)}
