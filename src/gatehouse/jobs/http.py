"""`/api/jobs/*`: the queues' door for clients without a Redis connection.

Whoever holds a job's id can read its result. Results rest without credentials (`at_rest`), but
hold personal data; so the ids this door makes are random (128 bits), client-chosen ones must be
at least 16 characters, and a job whose id is shorter (BullMQ's own ids count 1, 2, 3 …) shows
its state and outcome but not its `data`. A job meets the per-address limit of the HTTP route
it stands for; per-account limits are the flows' own, so they hold for every producer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from gatehouse.bootstrap import Services
from gatehouse.errors import InvalidInput, NotFound
from gatehouse.jobs.queues import known_queue
from gatehouse.jobs.results import at_rest
from gatehouse.web.deps import services
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, Out, error_answers

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]
# Letters, digits, `-` and `_`: BullMQ refuses `:` in ids and treats all-digit ones as its own.
JobId = Annotated[str, Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
UNGUESSABLE = 16
# The HTTP route each job stands for (queue, or queue:name / queue:purpose / queue:field where
# those pick the flow), whose `<action>_ip` limit it meets here, on the route's own counter: an
# address that the route answers 429 gets 429 here too. Queues not listed have routes without
# limits.
ROUTE_OF_JOB = {
    "verify-user": "login",
    "create-user": "verify",
    "verification:register": "register",
    "verification:recovery": "forgot",
    "password-recovery:request": "forgot",
    "password-recovery:reset": "reset",
    "update-user:phone_otp": "phone_verify",  # POST /api/auth/phone/verify
    "mfa": "mfa",  # POST /api/auth/mfa/...
}


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    data: dict[str, Any]
    job_id: JobId | None = None


class IdempotencyKey(BaseModel):
    key: JobId


class JobAcceptedData(Out):
    """The `data` of a submitted job: its id (also in the Location header) and queue."""

    job_id: str
    queue: str


class JobStateData(Out):
    """The `data` of a job's state. `result` is the job's `{success, message, data}` as stored
    (never a credential), only `success`, `message` and `code` of it for a short, guessable id."""

    job_id: str
    queue: str
    name: str
    state: str  # BullMQ's: waiting, delayed, active, completed, failed... or unknown
    result: dict[str, Any] | None
    failed_reason: str | None
    attempts_made: int


@router.post(
    "/{queue}",
    status_code=202,
    response_model=Envelope[JobAcceptedData],
    responses=error_answers(*BODY_ERRORS, 404, 429, 503, meaning={404: "Unknown queue"}),
)
async def submit(
    queue: str,
    body: JobIn,
    svc: Svc,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JSON:
    """Queue a job; its result comes over Socket.IO (`data.notify`) or from the GET below."""
    known_queue(queue)
    await guard(request, "jobs")  # per client address (`jobs_ip`)
    action = route_of_job(queue, body.name or queue, body.data)
    if action is not None:
        # Per address only: the flow counts `<action>_account` when the job runs, as it does
        # for the route; counting it here too would spend the account's budget twice.
        await guard(request, action)
    job_id = body.job_id
    if idempotency_key is not None:
        key = _idempotency_key(idempotency_key)
        if job_id is not None and job_id != key:
            raise InvalidInput(
                "job_id and Idempotency-Key differ",
                errors=[{"field": "job_id", "message": "must equal the Idempotency-Key header"}],
            )
        job_id = key
    # A repeated id is the same job: submitting it again adds nothing.
    job_id = await svc.jobs.submit(queue, body.name or queue, body.data, job_id or _new_id())
    accepted = success("Job accepted", {"job_id": job_id, "queue": queue}, status=202)
    accepted.headers["Location"] = f"/api/jobs/{queue}/{job_id}"
    return accepted


@router.get(
    "/{queue}/{job_id}",
    response_model=Envelope[JobStateData],
    responses=error_answers(
        404, 422, 503, meaning={404: "Unknown queue, or no such job (any more)"}
    ),
)
async def read(queue: str, job_id: str, svc: Svc) -> JSON:
    known_queue(queue)
    state = await svc.jobs.get(queue, job_id) if len(job_id) <= 128 else None
    if state is None:
        raise NotFound("No such job (finished jobs are kept for a limited time)")
    # Results are stored at rest already; this also covers any stored by an older worker.
    result = None if state.result is None else at_rest(state.result)
    if result is not None and len(job_id) < UNGUESSABLE:
        result = {k: v for k, v in result.items() if k in ("success", "message", "code")}
    data = {
        "job_id": state.id,
        "queue": state.queue,
        "name": state.name,
        "state": state.state,
        "result": result,
        "failed_reason": state.failed_reason,
        "attempts_made": state.attempts_made,
    }
    return success("Job state", data)


def route_of_job(queue: str, name: str, data: dict[str, Any]) -> str | None:
    """The HTTP route action whose limits a job on `queue` meets, or None."""
    if queue == "password-recovery":
        return ROUTE_OF_JOB.get(f"{queue}:{name}")
    if queue == "verification":
        return ROUTE_OF_JOB.get(f"{queue}:{data.get('purpose')}")
    if queue == "update-user":  # a confirmation of a new phone, or an update (no limit)
        return ROUTE_OF_JOB.get(f"{queue}:phone_otp") if data.get("phone_otp") else None
    return ROUTE_OF_JOB.get(queue)


def _idempotency_key(value: str) -> str:
    try:
        return IdempotencyKey(key=value).key
    except ValueError:
        raise InvalidInput(
            "Invalid Idempotency-Key",
            errors=[
                {
                    "field": "Idempotency-Key",
                    "message": "16 to 128 letters, digits, '-' or '_'",
                }
            ],
        ) from None


def _new_id() -> str:
    return uuid.uuid4().hex
