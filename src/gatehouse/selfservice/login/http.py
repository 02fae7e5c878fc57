"""Password sign-in over HTTP (seed 002's `POST /api/auth/login`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.login.schemas import LoginData, LoginIn, MfaRequiredData, SecondFactorIn
from gatehouse.web.deps import Ctx
from gatehouse.web.hot import hot
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, error_answers

router = APIRouter(prefix="/api/auth", tags=["login"])
SECOND_FACTOR = "Second factor required"


@router.post(
    "/login",
    response_model=Envelope[LoginData | MfaRequiredData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
@hot
async def login(body: LoginIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "login")  # `login_account` is counted by the flow, for every door
    opened = await login_flow.login(
        c,
        email=str(body.email),
        password=body.password,
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(opened, second.MfaChallenge):
        return success(SECOND_FACTOR, opened.as_data())
    return success("Logged in successfully", opened.as_data())


@router.post(
    "/login/mfa",
    response_model=Envelope[LoginData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def login_mfa(body: SecondFactorIn, c: Ctx, request: Request) -> JSON:
    """The second step of a sign-in: a TOTP code, a recovery code or a passkey assertion."""
    await guard(request, "login")
    passkey = None
    if body.flow_id is not None or body.credential is not None:
        passkey = (body.flow_id or "", body.credential or {})
    opened = await second.finish(
        c,
        mfa_token=body.mfa_token,
        code=body.code,
        recovery_code=body.recovery_code,
        passkey=passkey,
        user_agent=request.headers.get("user-agent"),
    )
    return success("Logged in successfully", opened.as_data())
