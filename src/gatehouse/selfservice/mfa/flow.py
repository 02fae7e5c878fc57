"""An authenticator app (TOTP) and recovery codes, as their owner sets them up and removes them.

Setting up is two steps: a secret (shown once, as text, an `otpauth://` URI and a QR code),
then a first code from the app, which proves it was saved; only then does the app count as a
second factor, and ten recovery codes are made. Adding, removing and replacing all need a
recent authentication (or the password and second factor in the body), and each is told to
the owner by mail and on their live sockets."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import segno

from gatehouse.domain import events, factors
from gatehouse.domain.tokens import AccessClaims
from gatehouse.domain.users import User
from gatehouse.errors import Conflict, InvalidCode, InvalidInput, NotFound
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import audit, record
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account
from gatehouse.selfservice.mfa.codes import drop_if_no_factor, has_factor, store_new_codes
from gatehouse.selfservice.mfa.proof import step_up
from gatehouse.selfservice.notices import push_notice, write_notice
from gatehouse.selfservice.sessions.flow import authenticate

ISSUER = "Gatehouse"
CONFIRM_TRIES = 5  # wrong first codes before the secret is thrown away (DESIGN 9)


async def _signed_in(ctx: FlowContext, token: str) -> tuple[User, AccessClaims]:
    async with ctx.reader() as uow:
        return await authenticate(ctx, uow, token)


async def totp_setup(
    ctx: FlowContext,
    *,
    token: str,
    current_password: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """A new secret for the account's app, pending until `totp_confirm`. An app already
    confirmed must be removed first: setting up again never silently replaces a factor."""
    user, claims = await _signed_in(ctx, token)
    await limit_account(ctx, "mfa", user.id)
    await step_up(
        ctx, user, claims, current_password=current_password, code=code, action="mfa.totp.setup"
    )
    secret = factors.new_totp_secret()
    now = ctx.clock()
    async with ctx.uow() as uow:
        current = await uow.factors.totp(user.id)
        if current is not None and current.confirmed_at is not None:
            raise Conflict("An authenticator app is already set up: remove it first")
        ciphertext = ctx.keyring.encrypt(secret, factors.TOTP_CONTEXT)
        await uow.factors.put_totp(factors.TotpFactor(user.id, ciphertext, now))
        record(ctx, uow, "mfa.totp.setup", factor="access_token", user_id=user.id)
        await uow.commit()
    await ctx.failures.clear(_confirm_key(ctx, user.id))
    uri = factors.otpauth_uri(secret, user.email, ISSUER)
    return {"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)}


def qr_svg(uri: str) -> str:
    """The URI as a QR code an app can scan from the screen, as an SVG document (no network)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False, svgns=True)
    return out.getvalue().decode()


def _confirm_key(ctx: FlowContext, user_id: str) -> str:
    return ctx.blind_index("totp-confirm", user_id)


async def totp_confirm(ctx: FlowContext, *, token: str, code: str) -> dict[str, Any]:
    """The app's first code: the app becomes a second factor and ten recovery codes are made
    (returned here, once). Five wrong codes throw the pending secret away."""
    user, _claims = await _signed_in(ctx, token)
    await limit_account(ctx, "mfa", user.id)
    async with ctx.reader() as uow:
        pending = await uow.factors.totp(user.id)
    if pending is None or pending.confirmed_at is not None:
        raise NotFound("No authenticator app is being set up")
    secret = ctx.keyring.decrypt(pending.secret_ciphertext, factors.TOTP_CONTEXT)
    now = ctx.clock()
    step = factors.matching_step(secret, code, now, after=0)
    if step is None:
        await _wrong_first_code(ctx, user)
    assert step is not None
    async with ctx.uow() as uow:
        # The confirming code counts as used (DESIGN 3b): its step is the last accepted.
        if not await uow.factors.confirm_totp(user.id, now, step):
            raise NotFound("No authenticator app is being set up")
        codes = await store_new_codes(ctx, uow, user.id, now)
        await _changed(ctx, uow, user, events.MFA_ENABLED, {"method": "totp"}, "mfa_enabled", now)
        record(ctx, uow, "mfa.totp.confirm", factor="otp", user_id=user.id)
        await uow.commit()
    await push_notice(ctx, user.id, "mfa_enabled", now)
    return {"recovery_codes": codes}


async def _wrong_first_code(ctx: FlowContext, user: User) -> None:
    key = _confirm_key(ctx, user.id)
    wrong = await ctx.failures.add(key, ctx.clock().timestamp(), 600)
    audit("mfa.totp.confirm", "failure", factor="otp", user_id=user.id, reason="wrong_code")
    if wrong >= CONFIRM_TRIES:
        async with ctx.uow() as uow:
            current = await uow.factors.totp(user.id)
            if current is not None and current.confirmed_at is None:
                await uow.factors.remove_totp(user.id)
            await uow.commit()
        await ctx.failures.clear(key)
        raise InvalidCode("Too many wrong codes: set the authenticator app up again")
    raise InvalidCode("Invalid authenticator code")


async def totp_remove(
    ctx: FlowContext,
    *,
    token: str,
    current_password: str | None = None,
    code: str | None = None,
) -> None:
    """Remove the app. With no passkey left either, the recovery codes go too: they recover a
    second factor, and there is none any more."""
    user, claims = await _signed_in(ctx, token)
    await limit_account(ctx, "mfa", user.id)
    await step_up(
        ctx, user, claims, current_password=current_password, code=code, action="mfa.totp.remove"
    )
    now = ctx.clock()
    async with ctx.uow() as uow:
        current = await uow.factors.totp(user.id)
        if current is None:
            raise NotFound("No authenticator app is set up")
        await uow.factors.remove_totp(user.id)
        confirmed = current.confirmed_at is not None
        if confirmed:
            await drop_if_no_factor(uow, user.id, now)
            data = {"method": "totp"}
            await _changed(ctx, uow, user, events.MFA_DISABLED, data, "mfa_disabled", now)
        record(ctx, uow, "mfa.totp.remove", factor="access_token", user_id=user.id)
        await uow.commit()
    if confirmed:
        await push_notice(ctx, user.id, "mfa_disabled", now)


async def replace_recovery_codes(
    ctx: FlowContext,
    *,
    token: str,
    current_password: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """Ten new recovery codes; the old ones stop working. Only for an account with a second
    factor (they recover it)."""
    user, claims = await _signed_in(ctx, token)
    await limit_account(ctx, "mfa", user.id)
    await step_up(
        ctx, user, claims, current_password=current_password, code=code, action="mfa.recovery"
    )
    now = ctx.clock()
    async with ctx.uow() as uow:
        if not await has_factor(uow, user.id):
            raise InvalidInput("Set up a second factor first: recovery codes recover it")
        codes = await store_new_codes(ctx, uow, user.id, now)
        await write_notice(ctx, uow, user, "recovery_codes_replaced", now)
        record(ctx, uow, "mfa.recovery", factor="access_token", user_id=user.id)
        await uow.commit()
    await push_notice(ctx, user.id, "recovery_codes_replaced", now)
    return {"recovery_codes": codes}


async def methods_of(ctx: FlowContext, *, token: str) -> dict[str, Any]:
    """What the account has: its second factors and how many recovery codes are left."""
    user, _claims = await _signed_in(ctx, token)
    async with ctx.reader() as uow:
        methods = await uow.factors.methods(user.id)
        left = await uow.factors.recovery_codes_left(user.id)
    return {
        "totp": "totp" in methods,
        "passkeys": "passkey" in methods,
        "recovery_codes_left": left,
    }


async def _changed(
    ctx: FlowContext,
    uow: UnitOfWork,
    user: User,
    kind: str,
    data: dict[str, Any],
    notice: str,
    now: datetime,
) -> None:
    """The change's event and its notice, in its transaction."""
    await uow.outbox.add(events.user_event(kind, user.id, data, now))
    await write_notice(ctx, uow, user, notice, now)
