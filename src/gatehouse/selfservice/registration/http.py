"""Sign-up over HTTP: register, resend the code, verify it (seed 002's paths)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.registration.schemas import (
    RegisterData,
    RegisterIn,
    ResendOtpIn,
    VerifiedData,
    VerifyOtpIn,
)
from gatehouse.web.deps import Ctx
from gatehouse.web.hot import hot
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, error_answers

router = APIRouter(prefix="/api/auth", tags=["registration"])
CODE_SENT = "If the address can receive mail, a verification code has been sent to it"
CREATED = "Email verified; account created"
# A contested sign-up's account (two sign-ups, two passwords): no password until one is set.
SET_PASSWORD = "Email verified; set a password with password recovery"  # noqa: S105


@router.post(
    "/register",
    status_code=202,
    response_model=Envelope[RegisterData],
    responses=error_answers(*BODY_ERRORS, 429, 503),
)
async def register(body: RegisterIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "register")
    accepted = await registration.register(
        c, name=body.name, email=str(body.email), password=body.password, phone=body.phone
    )
    data = {"email": accepted.email, "expires_in": accepted.expires_in}
    return success(CODE_SENT, data, status=202)


@router.post(
    "/resend-otp",
    status_code=202,
    response_model=Envelope[RegisterData],
    responses=error_answers(*BODY_ERRORS, 429, 503),
)
async def resend_otp(body: ResendOtpIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "resend")
    accepted = await registration.resend(c, email=str(body.email))
    data = {"email": accepted.email, "expires_in": accepted.expires_in}
    return success(CODE_SENT, data, status=202)


@router.post(
    "/verify-otp",
    status_code=201,
    response_model=Envelope[VerifiedData],
    responses=error_answers(*BODY_ERRORS, 409, 429, 503),
)
@hot
async def verify_otp(body: VerifyOtpIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "verify")  # `verify_account` is counted by the flow, for every door
    done = await registration.verify_sign_up(c, email=str(body.email), otp=body.otp)
    data = {"user": done.user, "password_required": done.password_required}
    return success(SET_PASSWORD if done.password_required else CREATED, data, status=201)
