"""The profile over HTTP: read (seed 002), update and delete, with a bearer access token."""

from __future__ import annotations

from fastapi import APIRouter

from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile.schemas import ProfileDeleteIn, ProfileUpdateIn
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import ERRORS

router = APIRouter(prefix="/api/auth", tags=["profile"], responses=ERRORS)


@router.get("/profile")
async def read_profile(c: Ctx, token: Token) -> JSON:
    user = await profile.read(c, token=token)
    return success("Profile", {"user": user})


@router.patch("/profile")
async def update_profile(body: ProfileUpdateIn, c: Ctx, token: Token) -> JSON:
    user = await profile.update(c, token=token, **body.model_dump(exclude_unset=True))
    return success("User updated successfully", {"user": user})


@router.delete("/profile")
async def delete_profile(body: ProfileDeleteIn, c: Ctx, token: Token) -> JSON:
    await profile.delete(c, token=token, password=body.password)
    return success("Account deleted")
