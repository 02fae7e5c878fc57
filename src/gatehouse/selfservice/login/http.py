"""Password sign-in over HTTP (seed 002's `POST /api/auth/login`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login.schemas import LoginData, LoginIn
from gatehouse.web.deps import Ctx
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, error_answers

router = APIRouter(prefix="/api/auth", tags=["login"])


@router.post(
    "/login",
    response_model=Envelope[LoginData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def login(body: LoginIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "login")  # `login_account` is counted by the flow, for every door
    opened = await login_flow.login(
        c,
        email=str(body.email),
        password=body.password,
        user_agent=request.headers.get("user-agent"),
    )
    return success("Logged in successfully", opened.as_data())
