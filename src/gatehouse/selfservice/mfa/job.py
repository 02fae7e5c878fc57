"""Second factors on the queues: `mfa`, whose job name (`totp-setup`, `totp-confirm`,
`totp-remove`, `recovery-codes`) picks the step. The secret and the codes travel only in the
push to the job's `notify` room, never in the result Redis keeps (`jobs.results.at_rest`)."""

from __future__ import annotations

from gatehouse.errors import InvalidInput
from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.mfa import flow as mfa
from gatehouse.selfservice.mfa.schemas import MfaJob


async def totp_setup(ctx: FlowContext, job: MfaJob, job_id: str | None) -> Result:
    data = await mfa.totp_setup(
        ctx, token=job.token, current_password=job.current_password, code=job.code
    )
    return ok("Scan the code, then confirm with the app's first code", data)


async def totp_confirm(ctx: FlowContext, job: MfaJob, job_id: str | None) -> Result:
    if job.code is None:
        raise InvalidInput(
            "The app's first code is required",
            errors=[{"field": "code", "message": "required"}],
        )
    data = await mfa.totp_confirm(ctx, token=job.token, code=job.code)
    return ok("Authenticator app enabled; keep these recovery codes safe", data)


async def totp_remove(ctx: FlowContext, job: MfaJob, job_id: str | None) -> Result:
    await mfa.totp_remove(
        ctx, token=job.token, current_password=job.current_password, code=job.code
    )
    return ok("Authenticator app removed")


async def recovery_codes(ctx: FlowContext, job: MfaJob, job_id: str | None) -> Result:
    data = await mfa.replace_recovery_codes(
        ctx, token=job.token, current_password=job.current_password, code=job.code
    )
    return ok("New recovery codes; the old ones no longer work", data)


HANDLERS: dict[str, Handler] = {
    "mfa:totp-setup": (MfaJob, totp_setup),
    "mfa:totp-confirm": (MfaJob, totp_confirm),
    "mfa:totp-remove": (MfaJob, totp_remove),
    "mfa:recovery-codes": (MfaJob, recovery_codes),
}
