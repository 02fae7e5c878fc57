"""The authenticator app and recovery codes over HTTP (DESIGN 3b), with a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from gatehouse.selfservice.mfa import flow as mfa
from gatehouse.selfservice.mfa.schemas import (
    MfaStatusData,
    RecoveryCodesData,
    StepUpIn,
    TotpConfirmIn,
    TotpSetupData,
)
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.limits import guard
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import BODY_ERRORS, Envelope, NoData, error_answers

router = APIRouter(prefix="/api/auth/mfa", tags=["second factors"])
REAUTH = {403: "`reauth_required`: needs a recent sign-in, or `current_password` (and `code`)"}
# The proof is optional (a recent sign-in is enough), and so is the body that carries it.
OptionalProof = Annotated[StepUpIn | None, Body()]


@router.get("", response_model=Envelope[MfaStatusData], responses=error_answers(401, 503))
async def status(c: Ctx, token: Token) -> JSON:
    return success("Second factors", await mfa.methods_of(c, token=token))


@router.post(
    "/totp",
    response_model=Envelope[TotpSetupData],
    responses=error_answers(*BODY_ERRORS, 401, 403, 409, 429, 503, meaning=REAUTH),
)
async def totp_setup(c: Ctx, token: Token, request: Request, body: OptionalProof = None) -> JSON:
    await guard(request, "mfa")
    proof = body or StepUpIn()
    data = await mfa.totp_setup(
        c, token=token, current_password=proof.current_password, code=proof.code
    )
    return success("Scan the code, then confirm with the app's first code", data)


@router.post(
    "/totp/confirm",
    response_model=Envelope[RecoveryCodesData],
    responses=error_answers(*BODY_ERRORS, 401, 404, 429, 503),
)
async def totp_confirm(body: TotpConfirmIn, c: Ctx, token: Token, request: Request) -> JSON:
    await guard(request, "mfa")
    data = await mfa.totp_confirm(c, token=token, code=body.code)
    return success("Authenticator app enabled; keep these recovery codes safe", data)


@router.delete(
    "/totp",
    response_model=Envelope[NoData],
    responses=error_answers(*BODY_ERRORS, 401, 403, 404, 429, 503, meaning=REAUTH),
)
async def totp_remove(c: Ctx, token: Token, request: Request, body: OptionalProof = None) -> JSON:
    await guard(request, "mfa")
    proof = body or StepUpIn()
    await mfa.totp_remove(c, token=token, current_password=proof.current_password, code=proof.code)
    return success("Authenticator app removed")


@router.post(
    "/recovery-codes",
    response_model=Envelope[RecoveryCodesData],
    responses=error_answers(*BODY_ERRORS, 401, 403, 429, 503, meaning=REAUTH),
)
async def recovery_codes(
    c: Ctx, token: Token, request: Request, body: OptionalProof = None
) -> JSON:
    await guard(request, "mfa")
    proof = body or StepUpIn()
    data = await mfa.replace_recovery_codes(
        c, token=token, current_password=proof.current_password, code=proof.code
    )
    return success("New recovery codes; the old ones no longer work", data)
