"""Proof of presence for what a stolen access token alone must not do (DESIGN 3a): a step-up for
sensitive changes, and `reauth`, which renews a session's `auth_time`.

An account with a second factor proves it as well: a password alone is what a phished or reused
password gives an attacker, so with it comes a TOTP code or a recovery code (or, at reauth, a
passkey assertion on its own, which is two factors in one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.domain.factors import TOTP_DIGITS
from gatehouse.domain.sessions import is_recent
from gatehouse.domain.throttle import FAILURE_WINDOW_SECONDS
from gatehouse.domain.tokens import AccessClaims
from gatehouse.domain.users import User
from gatehouse.errors import InvalidCode, InvalidInput, InvalidToken
from gatehouse.selfservice.audit import proof_action, record
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account, sign_in_throttle
from gatehouse.selfservice.login.second import FINISHING, recovery_spender, totp_spender
from gatehouse.selfservice.notices import push_notice, write_notice
from gatehouse.selfservice.passkeys.flow import verify_assertion
from gatehouse.selfservice.sessions.flow import authenticate, issue_access
from gatehouse.selfservice.sessions.manage import prove_password, require_recent


async def has_second_factor(ctx: FlowContext, user_id: str) -> bool:
    async with ctx.reader() as uow:
        methods = await uow.factors.methods(user_id)
    return any(method in FINISHING for method in methods)


async def prove_second_factor(ctx: FlowContext, user: User, code: str | None, action: str) -> None:
    """A TOTP code or a recovery code of the account, spent; InvalidCode when missing or wrong."""
    if not code:
        raise InvalidInput(
            "This account has a second factor: give its code too",
            errors=[{"field": "code", "message": "required"}],
        )
    await limit_account(ctx, "mfa", user.id)
    # The account's sign-in failure throttle: a wrong code here counts as a wrong one at sign-in.
    throttle, _ = await sign_in_throttle(ctx, user.email, action, factor="otp", user_id=user.id)
    now = ctx.clock()
    is_recovery = len("".join(code.split())) != TOTP_DIGITS  # recovery codes are longer
    spend = (
        recovery_spender(ctx, user, code) if is_recovery else await totp_spender(ctx, user, code)
    )
    factor = "recovery_code" if is_recovery else "totp"
    name, detail = proof_action(action)
    async with ctx.uow() as uow:
        ok = spend is not None and await spend(uow, now)
        if ok and is_recovery:
            await write_notice(ctx, uow, user, "recovery_code_used", now)
        outcome = "success" if ok else "failure"
        record(ctx, uow, name, outcome, factor=factor, user_id=user.id, reason=detail)
        await uow.commit()
    if not ok:
        await ctx.failures.add(throttle, ctx.clock().timestamp(), FAILURE_WINDOW_SECONDS)
        raise InvalidCode("Invalid second-factor code")
    await ctx.failures.clear(throttle)  # both factors proved: the owner is here
    if is_recovery:
        await push_notice(ctx, user.id, "recovery_code_used", now)


async def step_up(
    ctx: FlowContext,
    user: User,
    claims: AccessClaims,
    *,
    current_password: str | None,
    code: str | None,
    action: str,
) -> None:
    """A sensitive change goes ahead if the session proved a factor within the step-up window,
    or the body proves the owner is here: the password, with the second factor's code when the
    account has one. A password given is always checked (a wrong one is a failed sign-in)."""
    if current_password is None:
        require_recent(ctx, claims, user.id, action)
        return
    recent = is_recent(claims.auth_time, ctx.clock(), ctx.policy.step_up)
    second = not recent and await has_second_factor(ctx, user.id)
    await prove_password(ctx, user, current_password, action=action, clear=not second)
    if second:
        await prove_second_factor(ctx, user, code, action)


async def reauth(
    ctx: FlowContext,
    *,
    token: str,
    password: str | None = None,
    code: str | None = None,
    passkey: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Prove presence again in this session: the password (with the second factor if the
    account has one) or a passkey assertion. Its `auth_time` becomes now, and a new access
    token of the same session says so. A wrong password counts as a failed sign-in."""
    async with ctx.reader() as uow:
        user, claims = await authenticate(ctx, uow, token)
    await limit_account(ctx, "reauth", user.id)  # in the flow: every door meets it
    passkey_proved = False
    if passkey is not None:
        flow_id, credential = passkey
        await verify_assertion(
            ctx, flow_id=flow_id, credential=credential, user_id=user.id, action="reauth"
        )
        passkey_proved = True
    elif password is None:
        raise InvalidInput(
            "Give the password, or a passkey assertion",
            errors=[{"field": "password", "message": "required"}],
        )
    else:
        second = await has_second_factor(ctx, user.id)
        await prove_password(ctx, user, password, action="reauth", clear=not second)
        if second:
            await prove_second_factor(ctx, user, code, "reauth")
    return await _renewed(ctx, claims.sid, ctx.clock(), passkey_proved)


async def _renewed(
    ctx: FlowContext, session_id: str, now: datetime, passkey: bool = False
) -> dict[str, Any]:
    async with ctx.uow() as uow:
        signed_in = await uow.sessions.touch(session_id, now, authenticated=True)
        if signed_in is None:  # revoked while the factors were being checked
            raise InvalidToken()
        session, _user = signed_in
        if passkey:  # a password (and code) was recorded as it was proved
            record(ctx, uow, "reauth", factor="passkey", user_id=session.user_id)
        await uow.commit()
    access, issued = issue_access(ctx, session, now)
    return {
        "token": access,
        "token_type": "Bearer",
        "expires_in": int((issued.exp - now).total_seconds()),
    }
