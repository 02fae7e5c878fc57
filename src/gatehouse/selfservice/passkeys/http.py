"""Passkeys over HTTP (DESIGN 3b): registration (bearer, recent auth), the account's list,
removal (recent auth), and sign-in: passwordless, or the passkey step of a password sign-in
(`mfa_token`, finished at `POST /api/auth/login/mfa`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from gatehouse.selfservice.login import second
from gatehouse.selfservice.passkeys import flow as passkeys
from gatehouse.selfservice.passkeys.schemas import (
    LoginIn,
    LoginOptionsIn,
    OptionsData,
    PasskeyData,
    PasskeysData,
    RegisterIn,
    SignedInData,
)
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.hot import hot
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth/passkeys", tags=["passkeys"])
NOT_ACCEPTED = (
    "The passkey was not accepted (wrong origin or relying party, no user verification, bad "
    "signature), or its flow was spent, expired or started by another account: start again"
)
NOT_RECENT = "No recent authentication: `reauth_required` (POST /api/auth/reauth first)"


@router.post(
    "/register/options",
    response_model=Envelope[OptionsData],
    responses=error_answers(
        401, 429, 503, meaning={403: NOT_RECENT, 409: "The account holds too many passkeys"}
    ),
)
async def registration_options(c: Ctx, token: Token) -> JSON:
    data = await passkeys.registration_options(c, token=token)
    return success("Create the passkey with these options", data)


@router.post(
    "/register/verify",
    status_code=201,
    response_model=Envelope[PasskeyData],
    responses=error_answers(
        *BODY_ERRORS,
        401,
        429,
        503,
        meaning={400: NOT_ACCEPTED, 409: "This passkey is already registered (or too many)"},
    ),
)
async def register(body: RegisterIn, c: Ctx, token: Token) -> JSON:
    passkey, codes = await passkeys.register(
        c, token=token, flow_id=body.flow_id, credential=body.credential, name=body.name
    )
    if codes is None:
        return success("Passkey added", {"passkey": passkey}, status=201)
    message = "Passkey added; keep these recovery codes safe"
    return success(message, {"passkey": passkey, "recovery_codes": codes}, status=201)


@router.get("", response_model=Envelope[PasskeysData], responses=error_answers(401, 503))
async def list_passkeys(c: Ctx, token: Token) -> JSON:
    return success("Passkeys", {"passkeys": await passkeys.list_passkeys(c, token=token)})


# Another account's passkey answers as an unknown one: ids are not confirmed to exist.
@router.delete(
    "/{passkey_id}",
    response_model=Envelope[NoData],
    responses=error_answers(
        401, 422, 503, meaning={403: NOT_RECENT, 404: "No such passkey of yours"}
    ),
)
async def remove(
    passkey_id: Annotated[str, Path(min_length=1, max_length=64)], c: Ctx, token: Token
) -> JSON:
    await passkeys.remove(c, token=token, passkey_id=passkey_id)
    return success("Passkey removed")


@router.post(
    "/login/options",
    response_model=Envelope[OptionsData],
    responses=error_answers(
        *BODY_ERRORS,
        401,
        404,
        429,
        503,
        meaning={401: "An invalid or expired `mfa_token`", 404: "The account has no passkey"},
    ),
)
@hot
async def login_options(body: LoginOptionsIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "passkey_login")
    user_id = None
    if body.mfa_token is not None:
        # The passkey step of a password sign-in: the token (selfservice/login/second.py)
        # names the account, and the flow is bound to it.
        user_id = await second.user_of_mfa_token(c, body.mfa_token)
    data = await passkeys.assertion_options(c, user_id=user_id)
    return success("Sign in with these options", data)


@router.post(
    "/login/verify",
    response_model=Envelope[SignedInData],
    responses=error_answers(
        *BODY_ERRORS, 401, 429, 503, meaning={401: "The passkey was not accepted"}
    ),
)
@hot
async def login(body: LoginIn, c: Ctx, request: Request) -> JSON:
    await guard(request, "passkey_login")  # `passkey_login_account` is counted by the flow
    opened = await passkeys.sign_in(
        c,
        flow_id=body.flow_id,
        credential=body.credential,
        user_agent=request.headers.get("user-agent"),
    )
    return success("Logged in successfully", opened.as_data())
