"""Sign-up on the queues: `create-user` makes the account from a sign-up code."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.registration.schemas import CreateUserJob


async def create_user(ctx: FlowContext, job: CreateUserJob, job_id: str | None) -> Result:
    done = await registration.create_account(
        ctx,
        email=str(job.email),
        otp=job.otp,
        password=job.password,
        name=job.name,
        phone=job.phone,
        # Run again after a worker died, the job finds the user its first run created.
        job=f"create-user:{job_id}" if job_id else None,
    )
    # A contested sign-up's account has no password: its owner sets one through recovery.
    message = "User created; set a password with password recovery"
    data = {"user": done.user, "password_required": done.password_required}
    return ok(message if done.password_required else "User created", data, done.user["id"])


HANDLERS: dict[str, Handler] = {"create-user": (CreateUserJob, create_user)}
