"""The profile over HTTP: read (seed 002), update and delete, and the confirmation of a new
phone, with a bearer access token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile import phone
from gatehouse.selfservice.profile.schemas import (
    PHONE_CODE_SENT,
    PHONE_VERIFIED,
    UPDATED,
    PhonePendingData,
    PhoneVerifyIn,
    ProfileDeleteIn,
    ProfileUpdateIn,
    UserData,
)
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.hot import hot
from gatehouse.web.limits import guard
from gatehouse.web.replays import replayable
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth", tags=["profile"])
REAUTH = {403: "`reauth_required`: a phone change needs a recent sign-in or `current_password`"}
PENDING: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Envelope[PhonePendingData],
        "description": "A new phone asked for: pending until its code is confirmed "
        "(`POST /api/auth/phone/verify`); the other fields given changed",
    }
}


@router.get("/profile", response_model=Envelope[UserData], responses=error_answers(401, 503))
@hot
async def read_profile(c: Ctx, token: Token, request: Request) -> JSON:
    user, held = await profile.read_held(c, token=token)
    if held is not None:  # read from the signed-in cache: the same answer while that holds
        replayable(request, held.current)
    return success("Profile", {"user": user})


@router.patch(
    "/profile",
    response_model=Envelope[UserData],
    responses={**PENDING, **error_answers(*BODY_ERRORS, 401, 403, 429, 503, meaning=REAUTH)},
)
async def update_profile(body: ProfileUpdateIn, c: Ctx, token: Token) -> JSON:
    updated = await profile.update(c, token=token, **body.model_dump(exclude_unset=True))
    if updated.pending is not None:
        return success(PHONE_CODE_SENT, updated.as_data(), status=202)
    return success(UPDATED, updated.as_data())


@router.post(
    "/phone/verify",
    response_model=Envelope[UserData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def verify_phone(body: PhoneVerifyIn, c: Ctx, token: Token, request: Request) -> JSON:
    await guard(request, "phone_verify")  # `phone_verify_account` is counted by the flow
    user = await phone.verify(c, token=token, otp=body.otp)
    return success(PHONE_VERIFIED, {"user": user})


@router.delete(
    "/profile",
    response_model=Envelope[NoData],
    responses=error_answers(*BODY_ERRORS, 401, 429, 503),
)
async def delete_profile(body: ProfileDeleteIn, c: Ctx, token: Token) -> JSON:
    await profile.delete(c, token=token, password=body.password, code=body.code)
    return success("Account deleted")
