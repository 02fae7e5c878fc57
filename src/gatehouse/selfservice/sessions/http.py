"""Sessions over HTTP: refresh (rotation), logout, the user's sessions, and reauth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from gatehouse.selfservice.login.schemas import LoginData
from gatehouse.selfservice.mfa import proof
from gatehouse.selfservice.sessions import manage, rotation
from gatehouse.selfservice.sessions.schemas import (
    LogoutIn,
    ReauthData,
    ReauthIn,
    RefreshIn,
    SessionsData,
)
from gatehouse.web.deps import Ctx, Token
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
    opened = await rotation.refresh(c, refresh_token=body.refresh_token)
    return success("Session refreshed", opened.as_data())


# An unknown or spent refresh token logs out as well: no 401 to learn from.
@router.post("/logout", response_model=Envelope[NoData], responses=error_answers(*BODY_ERRORS, 503))
async def logout(body: LogoutIn, c: Ctx) -> JSON:
    await rotation.logout(c, refresh_token=body.refresh_token, everywhere=body.everywhere)
    return success("Logged out everywhere" if body.everywhere else "Logged out")


@router.get("/sessions", response_model=Envelope[SessionsData], responses=error_answers(401, 503))
async def list_sessions(c: Ctx, token: Token) -> JSON:
    _user_id, found = await manage.list_sessions(c, token=token)
    return success("Sessions", {"sessions": found})


# Another user's session answers as an unknown one: ids are not confirmed to exist.
@router.delete(
    "/sessions/{session_id}",
    response_model=Envelope[NoData],
    responses=error_answers(401, 404, 422, 503, meaning={404: "No such session of yours"}),
)
async def revoke_session(
    session_id: Annotated[str, Path(min_length=1, max_length=64)], c: Ctx, token: Token
) -> JSON:
    await manage.revoke_session(c, token=token, session_id=session_id)
    return success("Session ended")


@router.post(
    "/reauth",
    response_model=Envelope[ReauthData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def reauth(body: ReauthIn, c: Ctx, token: Token, request: Request) -> JSON:
    await guard(request, "reauth")  # `reauth_account` is counted by the flow, for every door
    passkey = None
    if body.flow_id is not None or body.credential is not None:
        passkey = (body.flow_id or "", body.credential or {})
    data = await proof.reauth(
        c, token=token, password=body.password, code=body.code, passkey=passkey
    )
    return success("Authenticated again", data)
