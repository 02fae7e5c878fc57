"""The profile on the queues: `read-user`, `update-user` (which also confirms a new phone, with
`phone_otp`), `delete-user`."""

from __future__ import annotations

from gatehouse.errors import InvalidInput
from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile import phone
from gatehouse.selfservice.profile.schemas import (
    PHONE_CODE_SENT,
    PHONE_VERIFIED,
    UPDATED,
    DeleteUserJob,
    ReadUserJob,
    UpdateUserJob,
)

# What `phone_otp` does not come with: confirming a phone is a step of its own, as over HTTP.
CHANGES = ("name", "phone", "image", "password", "current_password", "code")


async def read_user(ctx: FlowContext, job: ReadUserJob, job_id: str | None) -> Result:
    user = await profile.read(ctx, token=job.token)
    return ok("Profile", {"user": user}, user["id"])


async def update_user(ctx: FlowContext, job: UpdateUserJob, job_id: str | None) -> Result:
    if job.phone_otp is not None:
        return await _verify_phone(ctx, job, job.phone_otp, job_id)
    updated = await profile.update(
        ctx,
        token=job.token,
        name=job.name,
        phone=job.phone,
        image=job.image,
        password=job.password,
        current_password=job.current_password,
        code=job.code,
    )
    message = UPDATED if updated.pending is None else PHONE_CODE_SENT
    return ok(message, updated.as_data(), updated.user["id"])


async def _verify_phone(
    ctx: FlowContext, job: UpdateUserJob, otp: str, job_id: str | None
) -> Result:
    extra = [name for name in CHANGES if getattr(job, name) is not None]
    if extra:
        raise InvalidInput(
            "phone_otp confirms a pending phone, and comes alone",
            errors=[{"field": name, "message": "not with phone_otp"} for name in extra],
        )
    user = await phone.verify(
        ctx,
        token=job.token,
        otp=otp,
        # Run again after its worker died, the job passes on the receipt its first run left.
        job=f"update-user:{job_id}" if job_id else None,
    )
    return ok(PHONE_VERIFIED, {"user": user}, user["id"])


async def delete_user(ctx: FlowContext, job: DeleteUserJob, job_id: str | None) -> Result:
    user_id = await profile.delete(ctx, token=job.token, password=job.password, code=job.code)
    return ok("User deleted", {"user_id": user_id}, user_id)


HANDLERS: dict[str, Handler] = {
    "read-user": (ReadUserJob, read_user),
    "update-user": (UpdateUserJob, update_user),
    "delete-user": (DeleteUserJob, delete_user),
}
