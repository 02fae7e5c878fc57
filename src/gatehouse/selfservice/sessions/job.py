"""Sessions on the queues: `sessions`, whose job name (`list`, `revoke`) picks the step."""

from __future__ import annotations

from gatehouse.jobs.results import Handler, Result, ok
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.sessions import manage
from gatehouse.selfservice.sessions.schemas import SessionRevokeJob, SessionsListJob


async def list_sessions(ctx: FlowContext, job: SessionsListJob, job_id: str | None) -> Result:
    user_id, found = await manage.list_sessions(ctx, token=job.token)
    return ok("Sessions", {"sessions": found}, user_id)


async def revoke(ctx: FlowContext, job: SessionRevokeJob, job_id: str | None) -> Result:
    user_id = await manage.revoke_session(ctx, token=job.token, session_id=job.session_id)
    return ok("Session ended", {}, user_id)


HANDLERS: dict[str, Handler] = {
    "sessions:list": (SessionsListJob, list_sessions),
    "sessions:revoke": (SessionRevokeJob, revoke),
}
