"""Queue jobs → flows: the one dispatcher every worker (BullMQ or embedded) calls.

A job's answer is `{success, message, data}` (plus `code` and `errors` on refusals, and
`user_id` when the job acted on a known account). Business refusals (bad input, wrong code,
expired or forged token) complete with `success: false` and are not retried; infrastructure
failures (`errors.Unavailable` and anything unexpected) raise, so the queue retries them."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from gatehouse.domain.tokens import TokenError
from gatehouse.entrypoints import job_schemas as s
from gatehouse.errors import GatehouseError, InvalidInput, Unavailable
from gatehouse.flows import profile, recovery, registration, session
from gatehouse.flows.context import FlowContext

QUEUES = (
    "verification",
    "create-user",
    "verify-user",
    "read-user",
    "update-user",
    "delete-user",
    "password-recovery",
)
Result = dict[str, Any]


def ok(message: str, data: dict[str, Any] | None = None, user_id: str | None = None) -> Result:
    result: Result = {"success": True, "message": message, "data": data or {}}
    if user_id:
        result["user_id"] = user_id
    return result


async def _verification(ctx: FlowContext, job: s.VerificationJob, job_id: str | None) -> Result:
    if job.purpose == "register":
        if job.channel != "email":
            raise InvalidInput("Sign-up codes are sent by email", errors=[_field("channel")])
        accepted = await registration.send_signup_code(ctx, email=_email(job.to))
        return ok("Verification code sent", {"expires_in": accepted.expires_in})
    if job.channel == "email":
        ttl = await recovery.request(ctx, email=_email(job.to), channel="email")
    else:
        ttl = await recovery.request(ctx, phone=job.to, channel=job.channel)
    return ok("Verification code sent", {"expires_in": ttl})


async def _create_user(ctx: FlowContext, job: s.CreateUserJob, job_id: str | None) -> Result:
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


async def _verify_user(ctx: FlowContext, job: s.VerifyUserJob, job_id: str | None) -> Result:
    opened = await session.login(ctx, email=str(job.email), password=job.password)
    return ok("Logged in successfully", opened.as_data(), opened.user["id"])


async def _read_user(ctx: FlowContext, job: s.ReadUserJob, job_id: str | None) -> Result:
    user = await profile.read(ctx, token=job.token)
    return ok("Profile", {"user": user}, user["id"])


async def _update_user(ctx: FlowContext, job: s.UpdateUserJob, job_id: str | None) -> Result:
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


async def _delete_user(ctx: FlowContext, job: s.DeleteUserJob, job_id: str | None) -> Result:
    user_id = await profile.delete(ctx, token=job.token, password=job.password)
    return ok("User deleted", {"user_id": user_id}, user_id)


async def _recovery_request(
    ctx: FlowContext, job: s.RecoveryRequestJob, job_id: str | None
) -> Result:
    ttl = await recovery.request(
        ctx, email=str(job.email) if job.email else None, phone=job.phone, channel=job.channel
    )
    return ok("If the account exists, a reset code has been sent", {"expires_in": ttl})


async def _recovery_reset(ctx: FlowContext, job: s.RecoveryResetJob, job_id: str | None) -> Result:
    user_id = await recovery.reset(
        ctx,
        otp=job.otp,
        new_password=job.new_password,
        email=str(job.email) if job.email else None,
        phone=job.phone,
    )
    return ok("Password reset; please log in again", {}, user_id)


Handler = tuple[type[BaseModel], Callable[[FlowContext, Any, str | None], Awaitable[Result]]]
HANDLERS: dict[str, Handler] = {
    "verification": (s.VerificationJob, _verification),
    "create-user": (s.CreateUserJob, _create_user),
    "verify-user": (s.VerifyUserJob, _verify_user),
    "read-user": (s.ReadUserJob, _read_user),
    "update-user": (s.UpdateUserJob, _update_user),
    "delete-user": (s.DeleteUserJob, _delete_user),
    "password-recovery:request": (s.RecoveryRequestJob, _recovery_request),
    "password-recovery:reset": (s.RecoveryResetJob, _recovery_reset),
}


def _field(name: str, message: str = "invalid") -> dict[str, str]:
    return {"field": name, "message": message}


def _email(value: str) -> str:
    try:
        return str(s.RecoveryRequestJob.model_validate({"email": value}).email)
    except ValidationError:
        raise InvalidInput("Invalid email address", errors=[_field("to")]) from None


def refusal(exc: GatehouseError) -> Result:
    return {
        "success": False,
        "message": exc.message,
        "code": exc.code,
        "errors": exc.errors,
        "data": {},
    }


async def handle_job(
    ctx: FlowContext, queue: str, name: str, data: Any, job_id: str | None = None
) -> Result:
    key = f"{queue}:{name}" if queue == "password-recovery" else queue
    handler = HANDLERS.get(key)
    if handler is None:
        known = "request or reset" if queue == "password-recovery" else "a known queue"
        return refusal(InvalidInput(f"Unknown job {name!r} on queue {queue!r}: use {known}"))
    model, run = handler
    if not isinstance(data, dict):
        return refusal(InvalidInput("Job data must be a JSON object"))
    try:
        job = model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "data", "message": e["msg"]}
            for e in exc.errors()
        ]
        return refusal(InvalidInput("Some fields are invalid", errors=errors))
    try:
        return await run(ctx, job, job_id)
    except Unavailable:
        raise  # retried by the queue with backoff
    except GatehouseError as exc:
        result = refusal(exc)
        token = getattr(job, "token", None)
        if token:  # the account the refusal concerns, so its own sockets may hear of it
            # A forged or expired token gets no user room at all.
            with contextlib.suppress(TokenError):
                result["user_id"] = ctx.tokens.verify(token, ctx.clock()).sub
        return result


def notification_room(data: Any, result: dict[str, Any]) -> str | None:
    """The Socket.IO room a job's result may be pushed to, or None (no `notify`, or refused).

    `notify` is a client's sid or `user:<id>`; a `user:` room is allowed only for the user the
    job acted on, so a producer cannot push one account's data into another's sockets."""
    notify = data.get("notify") if isinstance(data, dict) else None
    if not isinstance(notify, str) or not notify or len(notify) > 200:
        return None
    if notify.startswith("user:"):
        return notify if result.get("user_id") and notify == f"user:{result['user_id']}" else None
    return notify
