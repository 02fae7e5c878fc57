"""`/api/auth/*`: the routes of seed 002 plus resend, refresh and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from gatehouse.entrypoints.api.deps import bearer_token, ctx
from gatehouse.entrypoints.api.limits import guard
from gatehouse.entrypoints.api.responses import JSON, success
from gatehouse.entrypoints.api.schemas import (
    ERRORS,
    ForgotIn,
    LoginIn,
    LogoutIn,
    ProfileDeleteIn,
    ProfileUpdateIn,
    RefreshIn,
    RegisterIn,
    ResendOtpIn,
    ResetIn,
    VerifyOtpIn,
)
from gatehouse.flows import profile, recovery, registration, session
from gatehouse.flows.context import FlowContext

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERRORS)
Ctx = Annotated[FlowContext, Depends(ctx)]
Token = Annotated[str, Depends(bearer_token)]

RESET_SENT = "If an account matches, a reset code has been sent to it"
CODE_SENT = "If the address can receive mail, a verification code has been sent to it"


@router.post("/register", status_code=202)
async def register(body: RegisterIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "register")
    accepted = await registration.register(
        c, name=body.name, email=str(body.email), password=body.password, phone=body.phone
    )
    data = {"email": accepted.email, "expires_in": accepted.expires_in}
    return success(CODE_SENT, data, status=202)


@router.post("/resend-otp", status_code=202)
async def resend_otp(body: ResendOtpIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "resend")
    accepted = await registration.resend(c, email=str(body.email))
    data = {"email": accepted.email, "expires_in": accepted.expires_in}
    return success(CODE_SENT, data, status=202)


@router.post("/verify-otp", status_code=201)
async def verify_otp(body: VerifyOtpIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "verify", account=str(body.email).lower())
    user = await registration.verify(c, email=str(body.email), otp=body.otp)
    return success("Email verified; account created", {"user": user}, status=201)


@router.post("/login")
async def login(body: LoginIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "login", account=str(body.email).lower())
    opened = await session.login(c, email=str(body.email), password=body.password)
    return success("Logged in successfully", opened.as_data())


@router.post("/refresh")
async def refresh(body: RefreshIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "refresh")
    opened = await session.refresh(c, refresh_token=body.refresh_token)
    return success("Session refreshed", opened.as_data())


@router.post("/logout")
async def logout(body: LogoutIn, c: Ctx) -> JSON:
    await session.logout(c, refresh_token=body.refresh_token, everywhere=body.everywhere)
    return success("Logged out everywhere" if body.everywhere else "Logged out")


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


@router.post("/password/forgot", status_code=202)
async def forgot_password(body: ForgotIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "forgot")
    ttl = await recovery.request(
        c, email=str(body.email) if body.email else None, phone=body.phone, channel=body.channel
    )
    return success(RESET_SENT, {"expires_in": ttl}, status=202)


@router.post("/password/reset")
async def reset_password(body: ResetIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "reset", account=str(body.email or body.phone).lower())
    await recovery.reset(
        c,
        otp=body.otp,
        new_password=body.new_password,
        email=str(body.email) if body.email else None,
        phone=body.phone,
    )
    return success("Password reset; please log in again")
