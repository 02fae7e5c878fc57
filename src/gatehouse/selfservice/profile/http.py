"""The profile over HTTP: read (seed 002), update and delete, with a bearer access token."""

from __future__ import annotations

from fastapi import APIRouter

from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile.schemas import ProfileDeleteIn, ProfileUpdateIn, UserData
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.hot import hot
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth", tags=["profile"])
REAUTH = {403: "`reauth_required`: a new phone needs a recent sign-in or `current_password`"}


@router.get("/profile", response_model=Envelope[UserData], responses=error_answers(401, 503))
@hot
async def read_profile(c: Ctx, token: Token) -> JSON:
    user = await profile.read(c, token=token)
    return success("Profile", {"user": user})


@router.patch(
    "/profile",
    response_model=Envelope[UserData],
    responses=error_answers(*BODY_ERRORS, 401, 403, 429, 503, meaning=REAUTH),
)
async def update_profile(body: ProfileUpdateIn, c: Ctx, token: Token) -> JSON:
    user = await profile.update(c, token=token, **body.model_dump(exclude_unset=True))
    return success("User updated successfully", {"user": user})


@router.delete(
    "/profile",
    response_model=Envelope[NoData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def delete_profile(body: ProfileDeleteIn, c: Ctx, token: Token) -> JSON:
    await profile.delete(c, token=token, password=body.password)
    return success("Account deleted")
