"""The profile on the queues: `read-user`, `update-user`, `delete-user`."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile.schemas import DeleteUserJob, ReadUserJob, UpdateUserJob


async def read_user(ctx: FlowContext, job: ReadUserJob, job_id: str | None) -> Result:
    user = await profile.read(ctx, token=job.token)
    return ok("Profile", {"user": user}, user["id"])


async def update_user(ctx: FlowContext, job: UpdateUserJob, job_id: str | None) -> Result:
    user = await profile.update(
        ctx,
        token=job.token,
        name=job.name,
        phone=job.phone,
        image=job.image,
        password=job.password,
        current_password=job.current_password,
    )
    return ok("User updated successfully", {"user": user}, user["id"])


async def delete_user(ctx: FlowContext, job: DeleteUserJob, job_id: str | None) -> Result:
    user_id = await profile.delete(ctx, token=job.token, password=job.password)
    return ok("User deleted", {"user_id": user_id}, user_id)


HANDLERS: dict[str, Handler] = {
    "read-user": (ReadUserJob, read_user),
    "update-user": (UpdateUserJob, update_user),
    "delete-user": (DeleteUserJob, delete_user),
}
