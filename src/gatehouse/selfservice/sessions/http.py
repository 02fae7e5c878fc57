"""Sessions over HTTP: refresh (rotation) and logout."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gatehouse.selfservice.sessions import flow as sessions
from gatehouse.selfservice.sessions.schemas import LogoutIn, RefreshIn
from gatehouse.web.deps import Ctx
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import ERRORS

router = APIRouter(prefix="/api/auth", tags=["sessions"], responses=ERRORS)


@router.post("/refresh")
async def refresh(body: RefreshIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "refresh")
    opened = await sessions.refresh(c, refresh_token=body.refresh_token)
    return success("Session refreshed", opened.as_data())


@router.post("/logout")
async def logout(body: LogoutIn, c: Ctx) -> JSON:
    await sessions.logout(c, refresh_token=body.refresh_token, everywhere=body.everywhere)
    return success("Logged out everywhere" if body.everywhere else "Logged out")
