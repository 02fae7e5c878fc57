"""`/api/admin/*`: the operators' door, behind the bearer key `GATEHOUSE_ADMIN_TOKEN`.

With no key configured the whole prefix answers 404, as any unknown path does: an API that is
off does not announce itself. The key is compared in constant time. Failed jobs are listed
without their data (it holds passwords, codes and tokens). Users and the audit trail are in
`admin/users_http.py`, included below."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime

from gatehouse.admin import users_http, webhooks_http
from gatehouse.admin.jobs_cli import describe
from gatehouse.bootstrap import Services
from gatehouse.errors import Conflict, InvalidToken, NotFound
from gatehouse.jobs.queues import known_queue
from gatehouse.web.deps import services, services_of
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import Envelope, Out, error_answers

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False, description="The admin key (GATEHOUSE_ADMIN_TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_admin(request: Request, credentials: Credentials) -> None:
    expected = services_of(request).settings.admin_token.get_secret_value()
    if not expected:
        raise NotFound("Not Found")  # the same answer as a path that does not exist
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidToken("Missing or wrong admin key")


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])
Svc = Annotated[Services, Depends(services)]
# What any admin route may answer: a wrong key (401), the API off or an unknown queue (404), a
# bad parameter (422, see error_answers), the job store away (503).
REFUSED = (401, 404, 422, 503)
UNKNOWN = "Admin API off, or unknown queue"


class FailedJobOut(Out):
    """A failed job as an operator sees it (`jobs_cli.describe`): never its data."""

    job_id: str
    queue: str
    name: str
    attempts_made: int
    failed_reason: str | None
    failed_at: AwareDatetime | None


class FailedJobsData(Out):
    """A queue's failed jobs, the most recent first."""

    queue: str
    jobs: list[FailedJobOut]


class RetriedData(Out):
    """The ids of the jobs moved back to waiting."""

    queue: str
    job_ids: list[str]


@router.get(
    "/jobs/{queue}/failed",
    response_model=Envelope[FailedJobsData],
    responses=error_answers(*REFUSED, meaning={404: UNKNOWN}),
)
async def failed_jobs(
    queue: str, svc: Svc, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JSON:
    """The queue's failed jobs, most recent first: id, name, attempts, reason; never the data."""
    found = await svc.jobs.failed(known_queue(queue), limit)
    return success("Failed jobs", {"queue": queue, "jobs": [describe(s) for s in found]})


@router.post(
    "/jobs/{queue}/retry-all",
    response_model=Envelope[RetriedData],
    responses=error_answers(*REFUSED, meaning={404: UNKNOWN}),
)
async def retry_all(queue: str, svc: Svc) -> JSON:
    """Every job failed now goes back to waiting, its attempts reset."""
    moved = await svc.jobs.retry(known_queue(queue))
    log.warning("admin: re-drove %d failed job(s) of %s", len(moved), queue)
    return success("Failed jobs moved back to waiting", {"queue": queue, "job_ids": moved})


@router.post(
    "/jobs/{queue}/{job_id}/retry",
    response_model=Envelope[RetriedData],
    responses=error_answers(
        *REFUSED, meaning={404: f"{UNKNOWN}, or no such job", 409: "The job is not failed"}
    ),
)
async def retry_one(queue: str, job_id: str, svc: Svc) -> JSON:
    """One failed job goes back to waiting, its attempts reset; 409 if it is not failed."""
    moved = await svc.jobs.retry(known_queue(queue), [job_id]) if len(job_id) <= 128 else []
    if not moved:
        state = await svc.jobs.get(queue, job_id) if len(job_id) <= 128 else None
        if state is None:
            raise NotFound("No such job (finished jobs are kept for a limited time)")
        raise Conflict(f"The job is {state.state}, not failed")
    log.warning("admin: re-drove job %s/%s", queue, job_id)
    return success("Job moved back to waiting", {"queue": queue, "job_ids": moved})


# Users and the audit trail (admin/users_http.py), behind the same key.
router.include_router(users_http.router)
router.include_router(webhooks_http.router)  # webhooks (admin/webhooks_http.py)
