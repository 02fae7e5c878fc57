"""Password sign-in on the queues: `verify-user` answers as a login does."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login.schemas import VerifyUserJob


async def verify_user(ctx: FlowContext, job: VerifyUserJob, job_id: str | None) -> Result:
    opened = await login_flow.login(ctx, email=str(job.email), password=job.password)
    return ok("Logged in successfully", opened.as_data(), opened.user["id"])


HANDLERS: dict[str, Handler] = {"verify-user": (VerifyUserJob, verify_user)}
