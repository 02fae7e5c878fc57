"""Password recovery over HTTP: ask for a reset code, then reset with it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.recovery.schemas import ForgotData, ForgotIn, ResetIn
from gatehouse.web.deps import Ctx
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth", tags=["recovery"])
RESET_SENT = "If an account matches, a reset code has been sent to it"


@router.post(
    "/password/forgot",
    status_code=202,
    response_model=Envelope[ForgotData],
    responses=error_answers(*BODY_ERRORS, 429, 503),
)
async def forgot_password(body: ForgotIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "forgot")
    ttl = await recovery.request(
        c, email=str(body.email) if body.email else None, phone=body.phone, channel=body.channel
    )
    return success(RESET_SENT, {"expires_in": ttl}, status=202)


@router.post(
    "/password/reset",
    response_model=Envelope[NoData],
    responses=error_answers(*BODY_ERRORS, 429, 503),
)
async def reset_password(body: ResetIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "reset")  # `reset_account` is counted by the flow, for every door
    await recovery.reset(
        c,
        otp=body.otp,
        new_password=body.new_password,
        email=str(body.email) if body.email else None,
        phone=body.phone,
    )
    return success("Password reset; please log in again")
