"""The second step of a sign-in (DESIGN 3b): a password that was right for an account with a
second factor gives an `mfa_token`, not tokens; a TOTP code, a recovery code or a passkey
assertion then finishes it.

The `mfa_token` is `<nonce>.<user id>.<expiry>.<mac>`, signed with the token key, so it names
its account and cannot be made to name another; its life and its five tries live in the code
store under the nonce (a wrong factor spends a try, the right one spends the token), so it is
single use on every api node. Wrong factors also count as failed sign-ins of the account, under
the same throttle as wrong passwords, and the login limit applies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from gatehouse.domain import events, factors
from gatehouse.domain.codes import CodeCheck
from gatehouse.domain.crypto import keyed_hash, same
from gatehouse.domain.sessions import PWD, clip_user_agent
from gatehouse.domain.throttle import FAILURE_WINDOW_SECONDS
from gatehouse.domain.users import User
from gatehouse.errors import (
    InvalidCode,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
)
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import record, record_alone
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account, sign_in_throttle
from gatehouse.selfservice.notices import is_new_device, push_notice, write_notice
from gatehouse.selfservice.passkeys.flow import verify_assertion
from gatehouse.selfservice.sessions.flow import Session, open_session

MFA_TTL = timedelta(minutes=5)
MFA_TRIES = 5
PURPOSE = "mfa-login"
# A recovery code alone never asks for a second step. storage/pg_signin.py writes this rule in
# SQL (its FINISHING, which a test holds equal to this one).
FINISHING = ("totp", "passkey")


@dataclass(frozen=True)
class MfaChallenge:
    """What a right password answers for an account with a second factor."""

    mfa_token: str
    methods: tuple[str, ...]
    expires_in: int

    def as_data(self) -> dict[str, Any]:
        return {
            "mfa_required": True,
            "mfa_token": self.mfa_token,
            "methods": list(self.methods),
            "expires_in": self.expires_in,
        }


def _mac(ctx: FlowContext, nonce: str, user_id: str, expiry: str) -> str:
    return keyed_hash(ctx.secrets.token_key, "mfa-token", nonce, user_id, expiry)


def _live(ctx: FlowContext, nonce: str) -> str:
    """What the code store holds for a live token: only this process can make it."""
    return keyed_hash(ctx.secrets.code_key, PURPOSE, nonce)


async def challenge(ctx: FlowContext, user: User, methods: tuple[str, ...]) -> MfaChallenge:
    """An `mfa_token` for `user`, whose password was just proved."""
    nonce = events.new_id().replace("-", "")
    now = ctx.clock()
    expiry = str(int((now + MFA_TTL).timestamp()))
    ttl = int(MFA_TTL.total_seconds())
    await ctx.codes.put(PURPOSE, nonce, _live(ctx, nonce), ttl, MFA_TRIES)
    token = ".".join((nonce, user.id, expiry, _mac(ctx, nonce, user.id, expiry)))
    return MfaChallenge(token, methods, ttl)


def read_token(ctx: FlowContext, mfa_token: str) -> tuple[str, str]:
    """(nonce, user id) of a well-formed, unexpired token signed by us; else InvalidToken."""
    parts = mfa_token.split(".") if isinstance(mfa_token, str) else []
    if len(parts) != 4:
        raise InvalidToken()
    nonce, user_id, expiry, mac = parts
    if not same(mac, _mac(ctx, nonce, user_id, expiry)) or not expiry.isdigit():
        raise InvalidToken()
    if int(expiry) <= ctx.clock().timestamp():
        raise InvalidToken()
    return nonce, user_id


async def user_of_mfa_token(ctx: FlowContext, mfa_token: str) -> str:
    """The account a live `mfa_token` is for (passkey options for its second step)."""
    return read_token(ctx, mfa_token)[1]


async def finish(
    ctx: FlowContext,
    *,
    mfa_token: str,
    code: str | None = None,
    recovery_code: str | None = None,
    passkey: tuple[str, dict[str, Any]] | None = None,
    user_agent: str | None = None,
) -> Session:
    """Finish a sign-in with exactly one of: a TOTP `code`, a `recovery_code`, or a passkey
    assertion `(flow_id, credential)`. The session opened is `aal: 2`."""
    given = [f for f in (code, recovery_code, passkey) if f is not None]
    if len(given) != 1:
        raise InvalidInput(
            "Give one second factor: code, recovery_code or a passkey assertion",
            errors=[{"field": "code", "message": "one of code, recovery_code, credential"}],
        )
    nonce, user_id = read_token(ctx, mfa_token)
    async with ctx.reader() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise InvalidToken()
    if user.disabled_at is not None:  # disabled since the password was right
        await record_alone(ctx, "login.mfa", user_id=user.id, reason="disabled")
        raise InvalidToken()
    await limit_account(ctx, "login", user.email)
    throttle, failures = await sign_in_throttle(ctx, user.email, "login.mfa", user_id=user.id)
    method, spend = await _check(ctx, user, code, recovery_code, passkey)
    now = ctx.clock()
    session, new_device = None, False
    if spend is not None:
        async with ctx.uow() as uow:
            # The factor is spent first, in the session's transaction: if the token then turns
            # out spent or dead, the rollback gives the code back.
            if await spend(uow, now):
                verdict = await ctx.codes.check(PURPOSE, nonce, _live(ctx, nonce))
                if verdict is not CodeCheck.OK:
                    raise InvalidToken()
                new_device, session = await _open(ctx, uow, user, method, user_agent, now)
                record(ctx, uow, "login.mfa", factor=method, user_id=user.id)
                await uow.commit()
    if session is None:  # wrong, replayed, or lost a race for the same code
        await _wrong(ctx, nonce, throttle, user.id, method)
    if failures:
        await ctx.failures.clear(throttle)
    if new_device:
        await push_notice(ctx, user.id, "new_device", now)
    if method == "recovery_code":
        await push_notice(ctx, user.id, "recovery_code_used", now)
    return session


async def _open(
    ctx: FlowContext,
    uow: UnitOfWork,
    user: User,
    method: str,
    user_agent: str | None,
    now: datetime,
) -> tuple[bool, Session]:
    """The `aal: 2` session, its event and the notices it calls for, in the caller's unit."""
    amr = factors.amr_with((PWD,), factors.HWK if method == "passkey" else factors.OTP)
    device = clip_user_agent(user_agent)
    new_device = await is_new_device(ctx, uow, user, device, now)
    if new_device:
        await write_notice(ctx, uow, user, "new_device", now, device=device or "unnamed")
    if method == "recovery_code":
        await write_notice(ctx, uow, user, "recovery_code_used", now)
    session = await open_session(
        ctx, uow, user, family_id=events.new_id(), user_agent=user_agent, amr=amr, aal=factors.AAL2
    )
    await uow.outbox.add(events.user_event(events.LOGGED_IN, user.id, {"factor": method}, now))
    return new_device, session


async def _wrong(
    ctx: FlowContext, nonce: str, throttle: str, user_id: str, method: str
) -> NoReturn:
    """A wrong factor: a try of the token spent (the fifth ends it) and a failed sign-in."""
    await ctx.failures.add(throttle, ctx.clock().timestamp(), FAILURE_WINDOW_SECONDS)
    verdict = await ctx.codes.check(PURPOSE, nonce, "wrong")
    reason = "wrong_factor"
    await record_alone(ctx, "login.mfa", factor=method, user_id=user_id, reason=reason)
    if verdict in (CodeCheck.MISSING, CodeCheck.EXHAUSTED):
        raise InvalidToken()
    raise InvalidCode("Invalid second-factor code")


Spend = Any  # async (uow, now) -> bool: marks the factor used in the session's transaction


async def _check(
    ctx: FlowContext,
    user: User,
    code: str | None,
    recovery_code: str | None,
    passkey: tuple[str, dict[str, Any]] | None,
) -> tuple[str, Spend | None]:
    """The method used and how to spend it, or None as its spender when it is wrong."""
    if code is not None:
        return "totp", await totp_spender(ctx, user, code)
    if recovery_code is not None:
        return "recovery_code", recovery_spender(ctx, user, recovery_code)
    assert passkey is not None
    flow_id, credential = passkey
    try:
        # Its own audit action: the sign-in step is `login.mfa`, audited (and counted) below.
        await verify_assertion(
            ctx, flow_id=flow_id, credential=credential, user_id=user.id, action="login.passkey"
        )
    except InvalidCredentials:  # any refusal of the assertion is a wrong factor
        return "passkey", None

    async def spent(_uow: UnitOfWork, _now: datetime) -> bool:
        return True  # the assertion's counter was recorded as it was verified

    return "passkey", spent


async def totp_spender(ctx: FlowContext, user: User, code: str) -> Spend | None:
    """A spender of the step `code` belongs to, if it is the code of the account's confirmed
    app for a step newer than the last one accepted; None otherwise."""
    async with ctx.reader() as uow:
        factor = await uow.factors.totp(user.id)
    if factor is None or factor.confirmed_at is None:
        return None
    secret = ctx.keyring.decrypt(factor.secret_ciphertext, factors.TOTP_CONTEXT)
    step = factors.matching_step(secret, code, ctx.clock(), factor.last_step)
    if step is None:
        return None
    found = step

    async def spent(uow: UnitOfWork, _now: datetime) -> bool:
        return bool(await uow.factors.use_totp_step(user.id, found))

    return spent


def recovery_spender(ctx: FlowContext, user: User, recovery_code: str) -> Spend:
    """A recovery code is checked as it is spent: one conditional update says both."""
    code_hash = factors.recovery_code_hash(ctx.secrets.code_key, user.id, recovery_code)

    async def spent(uow: UnitOfWork, now: datetime) -> bool:
        return bool(await uow.factors.use_recovery_code(user.id, code_hash, now))

    return spent
