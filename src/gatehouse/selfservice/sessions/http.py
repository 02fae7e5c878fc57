"""Sessions over HTTP: refresh (rotation) and logout."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.login.schemas import LoginData
from gatehouse.selfservice.sessions import flow as sessions
from gatehouse.selfservice.sessions.schemas import LogoutIn, RefreshIn
from gatehouse.web.deps import Ctx
from gatehouse.web.hot import hot
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth", tags=["sessions"])


@router.post(
    "/refresh",
    response_model=Envelope[LoginData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
@hot
async def refresh(body: RefreshIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "refresh")
    opened = await sessions.refresh(c, refresh_token=body.refresh_token)
    return success("Session refreshed", opened.as_data())


# An unknown or spent refresh token logs out as well: no 401 to learn from.
@router.post("/logout", response_model=Envelope[NoData], responses=error_answers(*BODY_ERRORS, 503))
async def logout(body: LogoutIn, c: Ctx) -> JSON:
    await sessions.logout(c, refresh_token=body.refresh_token, everywhere=body.everywhere)
    return success("Logged out everywhere" if body.everywhere else "Logged out")
