"""Password recovery: a code by email, SMS or WhatsApp, then a reset that ends every session."""

from __future__ import annotations

from gatehouse.domain import events
from gatehouse.domain.codes import Purpose
from gatehouse.domain.users import User, normalize_email
from gatehouse.errors import InvalidCode, InvalidInput
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account
from gatehouse.selfservice.notices import push_notice, write_notice
from gatehouse.selfservice.otp import consume_then, limit_sends, route_for, send_code
from gatehouse.selfservice.sessions.flow import announce_revoked, revoke_all
from gatehouse.selfservice.timing import no_sooner_than
from gatehouse.selfservice.validation import require_password, require_phone

PURPOSE = Purpose.RECOVERY
CHANNELS = ("email", "sms", "whatsapp")


async def _find(
    ctx: FlowContext, uow: UnitOfWork, email: str | None, phone: str | None
) -> User | None:
    if bool(email) == bool(phone):
        raise InvalidInput(
            "Give either an email or a phone",
            errors=[{"field": "email", "message": "give exactly one of email and phone"}],
        )
    if email:
        found = await uow.users.get_by_email(normalize_email(email))
    else:
        clean = require_phone(phone)
        assert clean is not None
        found = await uow.users.get_by_phone_index(ctx.blind_index("phone", clean))
    # A disabled account recovers nothing: no code is sent, and a reset is a wrong code.
    return found if found is not None and found.disabled_at is None else None


async def request(
    ctx: FlowContext, *, email: str | None = None, phone: str | None = None, channel: str = "email"
) -> int:
    """Send a reset code if the account exists and can be reached on `channel` (or a fallback).
    The answer is the same, in the same time, either way: no account enumeration. Returns the
    code lifetime."""
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _request(ctx, email=email, phone=phone, channel=channel)


async def _request(ctx: FlowContext, *, email: str | None, phone: str | None, channel: str) -> int:
    if channel not in CHANNELS:
        raise InvalidInput(
            "Unknown channel", errors=[{"field": "channel", "message": "email, sms or whatsapp"}]
        )
    given = normalize_email(email) if email else require_phone(phone)
    if given and not (email and phone):
        await limit_sends(ctx, channel if phone else "email", given)
    async with ctx.uow() as uow:
        user = await _find(ctx, uow, email, phone)
        route = route_for(user, ctx, channel) if user else None
        if user is not None and route is not None:
            # Quiet: an account whose wrong tries are spent gets no code, and the answer is the
            # unknown account's (a 429 here told registered emails apart, issue 12).
            await send_code(
                ctx,
                uow,
                purpose=PURPOSE,
                identifier=user.id,
                key=user.id,
                route=route,
                template="password-reset",
                quiet=True,
            )
            await uow.commit()
    return int(ctx.policy.code_ttl.total_seconds())


async def reset(
    ctx: FlowContext,
    *,
    otp: str,
    new_password: str,
    email: str | None = None,
    phone: str | None = None,
) -> str:
    """Set a new password with a recovery code; every session ends. Returns the user id."""
    # `reset_account` here, not at the route, so `password-recovery` `reset` jobs from any
    # producer meet it too; the phone compacted, so spellings of one number share a counter.
    account = normalize_email(email) if email else require_phone(phone)
    if account:
        await limit_account(ctx, "reset", account)
    # Under the answer floor: an unknown account, a wrong code and a spent one are refused
    # alike (InvalidCode) and no sooner than the floor, so neither answer nor time tells them.
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _reset(ctx, otp=otp, new_password=new_password, email=email, phone=phone)


async def _reset(
    ctx: FlowContext, *, otp: str, new_password: str, email: str | None, phone: str | None
) -> str:
    require_password(new_password, "new_password", ctx.common_passwords)
    async with ctx.uow() as uow:
        user = await _find(ctx, uow, email, phone)
    if user is None:
        raise InvalidCode()
    found = user

    async def apply() -> str:
        password_hash = await ctx.hasher.hash(new_password)
        now = ctx.clock()
        async with ctx.uow() as uow:
            current = await uow.users.get(found.id)
            if current is None or current.disabled_at is not None:
                raise InvalidCode()
            await uow.users.update(
                current.with_changes(password_hash=password_hash, updated_at=now)
            )
            await uow.outbox.add(events.user_event(events.PASSWORD_RESET, current.id, {}, now))
            await write_notice(ctx, uow, current, "password_reset", now)
            await revoke_all(ctx, uow, current.id, "password_reset")
            record(ctx, uow, "password.reset", factor="otp", user_id=current.id)
            await uow.commit()
        # The notice first: an open page hears why before its socket is closed.
        await push_notice(ctx, found.id, "password_reset", now)
        await announce_revoked(ctx, found.id, "password_reset")
        # The account's owner proved control of it: earlier failed logins no longer count.
        await ctx.failures.clear(ctx.blind_index("login", found.email))
        return found.id

    return await consume_then(
        ctx, purpose=PURPOSE, identifier=user.id, otp=otp, action=apply, account=user.id
    )
