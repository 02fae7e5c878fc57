"""Password sign-in on the queues: `verify-user` answers as a login does."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.login.schemas import VerifyUserJob


async def verify_user(ctx: FlowContext, job: VerifyUserJob, job_id: str | None) -> Result:
    """A sign-in, or its second step; a right password for an account with a second factor
    answers `mfa_required` as the HTTP route does (the `mfa_token` travels only in the push)."""
    if job.mfa_token is not None:
        opened = await second.finish(
            ctx, mfa_token=job.mfa_token, code=job.code, recovery_code=job.recovery_code
        )
        return ok("Logged in successfully", opened.as_data(), opened.user["id"])
    assert job.email is not None
    assert job.password is not None
    answer = await login_flow.login(ctx, email=str(job.email), password=job.password)
    if isinstance(answer, second.MfaChallenge):
        return ok("Second factor required", answer.as_data())
    return ok("Logged in successfully", answer.as_data(), answer.user["id"])


HANDLERS: dict[str, Handler] = {"verify-user": (VerifyUserJob, verify_user)}
