"""Sign-up on the queues: `create-user` makes the account from a sign-up code."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.registration.schemas import CreateUserJob


async def create_user(ctx: FlowContext, job: CreateUserJob, job_id: str | None) -> Result:
    user = await registration.create_user(
        ctx,
        email=str(job.email),
        otp=job.otp,
        password=job.password,
        name=job.name,
        phone=job.phone,
        # Run again after a worker died, the job finds the user its first run created.
        job=f"create-user:{job_id}" if job_id else None,
    )
    return ok("User created", {"user": user}, user["id"])


HANDLERS: dict[str, Handler] = {"create-user": (CreateUserJob, create_user)}
