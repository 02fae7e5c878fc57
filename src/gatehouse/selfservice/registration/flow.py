"""Sign-up: register (pending user + emailed code), verify the code (permanent user), resend,
and create-user (code from the verification service + details in one step, seed 004)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.codes import Purpose
from gatehouse.domain.users import PendingRegistration, User, normalize_email, public_view
from gatehouse.errors import Conflict, InvalidCode
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.context import PHONE_CONTEXT, FlowContext, phone_of
from gatehouse.selfservice.otp import Route, consume_then, limit_sends, send_code
from gatehouse.selfservice.timing import no_sooner_than
from gatehouse.selfservice.validation import require_name, require_password, require_phone

PURPOSE = Purpose.REGISTER


@dataclass(frozen=True)
class Accepted:
    """What register and resend answer, identical for new, pending and existing emails."""

    email: str
    expires_in: int


async def register(
    ctx: FlowContext, *, name: str, email: str, password: str, phone: str | None = None
) -> Accepted:
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _register(ctx, name=name, email=email, password=password, phone=phone)


async def _register(
    ctx: FlowContext, *, name: str, email: str, password: str, phone: str | None
) -> Accepted:
    email = normalize_email(email)
    name = require_name(name)
    require_password(password, common=ctx.common_passwords)
    phone = require_phone(phone)
    await limit_sends(ctx, "email", email)
    # Hash before looking anything up: existing and new emails take the same time.
    password_hash = await ctx.hasher.hash(password)
    now = ctx.clock()
    async with ctx.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            await account_exists_notice(ctx, uow, email)
            await uow.commit()
            return _accepted(ctx, email)
        previous = await uow.pending.get_by_email(email)
        pending = PendingRegistration(
            id=previous.id if previous else events.new_id(),
            email=email,
            name=name,
            password_hash=password_hash,
            created_at=now,
            expires_at=now + ctx.policy.pending_ttl,
            phone_ciphertext=ctx.keyring.encrypt(phone, PHONE_CONTEXT) if phone else None,
            phone_index=ctx.blind_index("phone", phone) if phone else None,
        )
        await uow.pending.put(pending)
        await _send_code(ctx, uow, pending.email, pending.id, pending.name)
        await uow.outbox.add(
            events.user_event(events.REGISTERED, pending.id, {"email": email}, now)
        )
        await uow.commit()
    return _accepted(ctx, email)


async def account_exists_notice(ctx: FlowContext, uow: UnitOfWork, email: str) -> None:
    """No enumeration: the caller gets the usual answer; the owner learns of the attempt by mail."""
    now = ctx.clock()
    await uow.outbox.add(
        events.delivery(
            key=_recipient_key(ctx, email),
            channel="email",
            to=email,
            template="account-exists",
            now=now,
            expires_at=now + ctx.policy.code_ttl,
        )
    )


def _recipient_key(ctx: FlowContext, email: str) -> str:
    """The Kafka key (and the delivery events' subject) of mail to an address with no pending
    sign-up of its own: an HMAC of it, never the address, which would rest in Kafka and reach
    every consumer of `user-events` in plaintext."""
    return ctx.blind_index("recipient", email)


async def resend(ctx: FlowContext, *, email: str) -> Accepted:
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _resend(ctx, email=email)


async def _resend(ctx: FlowContext, *, email: str) -> Accepted:
    email = normalize_email(email)
    await limit_sends(ctx, "email", email)
    async with ctx.uow() as uow:
        pending = await uow.pending.get_by_email(email)
        if pending is not None and pending.expires_at > ctx.clock():
            await _send_code(ctx, uow, pending.email, pending.id, pending.name)
            await uow.commit()
    return _accepted(ctx, email)


async def send_signup_code(ctx: FlowContext, *, email: str) -> Accepted:
    """The verification service's sign-up code, before any details are given (seed 004)."""
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _send_signup_code(ctx, email=email)


async def _send_signup_code(ctx: FlowContext, *, email: str) -> Accepted:
    email = normalize_email(email)
    await limit_sends(ctx, "email", email)
    async with ctx.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            await account_exists_notice(ctx, uow, email)
        else:
            await _send_code(ctx, uow, email, key=_recipient_key(ctx, email), name="")
        await uow.commit()
    return _accepted(ctx, email)


async def verify(ctx: FlowContext, *, email: str, otp: str) -> dict[str, Any]:
    """Turn the pending registration into a user if the code is right; returns the user view."""
    email = normalize_email(email)

    async def create() -> dict[str, Any]:
        now = ctx.clock()
        async with ctx.uow() as uow:
            pending = await uow.pending.get_by_email(email)
            if pending is None or pending.expires_at <= now:
                raise InvalidCode()
            user = User(
                id=pending.id,
                email=pending.email,
                name=pending.name,
                password_hash=pending.password_hash,
                created_at=now,
                updated_at=now,
                phone_ciphertext=pending.phone_ciphertext,
                phone_index=pending.phone_index,
                email_verified_at=now,
            )
            await _add_user(uow, user)
            await uow.pending.delete(pending.id)
            await uow.commit()
        return public_view(user, phone_of(ctx, user), reveal_phone=False)

    return await consume_then(ctx, purpose=PURPOSE, identifier=email, otp=otp, action=create)


async def create_user(
    ctx: FlowContext,
    *,
    email: str,
    otp: str,
    password: str,
    name: str,
    phone: str | None = None,
    job: str | None = None,
) -> dict[str, Any]:
    """Create a verified user from a sign-up code and the details, in one step.

    `job` names the queue job doing it. A worker killed after the code check leaves the job to
    run again, with its code spent; that run passes the check on the receipt the first one left
    (see `otp.consume_then`). If the first run had committed, the second finds the user and
    answers with it instead of a conflict: the job succeeds and the user exists once."""
    email = normalize_email(email)
    name = require_name(name)
    require_password(password, common=ctx.common_passwords)
    phone = require_phone(phone)

    async def create() -> dict[str, Any]:
        password_hash = await ctx.hasher.hash(password)
        now = ctx.clock()
        async with ctx.uow() as uow:
            existing = await uow.users.get_by_email(email)
            if existing is not None:
                if job is not None and await _made_by_this_sign_up(ctx, existing, password):
                    return public_view(existing, phone_of(ctx, existing), reveal_phone=False)
                raise Conflict("An account with this email already exists")
            pending = await uow.pending.get_by_email(email)
            user = User(
                id=pending.id if pending else events.new_id(),
                email=email,
                name=name,
                password_hash=password_hash,
                created_at=now,
                updated_at=now,
                phone_ciphertext=ctx.keyring.encrypt(phone, PHONE_CONTEXT) if phone else None,
                phone_index=ctx.blind_index("phone", phone) if phone else None,
                email_verified_at=now,
            )
            if pending is not None:
                await uow.pending.delete(pending.id)
            else:
                await uow.outbox.add(
                    events.user_event(events.REGISTERED, user.id, {"email": email}, now)
                )
            await _add_user(uow, user)
            await uow.commit()
        return public_view(user, phone, reveal_phone=False)

    return await consume_then(
        ctx, purpose=PURPOSE, identifier=email, otp=otp, action=create, holder=job
    )


async def _made_by_this_sign_up(ctx: FlowContext, user: User, password: str) -> bool:
    """A job run again after its worker died: the code check passed on the receipt this job
    left, so the code is this sign-up's, and the verified account with this email and this
    very password is the one its first run committed (anyone else's would not match)."""
    if user.email_verified_at is None:
        return False
    matches, _ = await ctx.hasher.verify(user.password_hash, password)
    return matches


async def _add_user(uow: UnitOfWork, user: User) -> None:
    await uow.users.add(user)
    assert user.email_verified_at is not None
    await uow.outbox.add(
        events.user_event(events.VERIFIED, user.id, {"email": user.email}, user.email_verified_at)
    )


async def _send_code(ctx: FlowContext, uow: UnitOfWork, email: str, key: str, name: str) -> None:
    await send_code(
        ctx,
        uow,
        purpose=PURPOSE,
        identifier=email,
        key=key,
        route=Route("email", email),
        template="verify-email",
        variables={"name": name or "there"},
    )


def _accepted(ctx: FlowContext, email: str) -> Accepted:
    return Accepted(email=email, expires_in=int(ctx.policy.code_ttl.total_seconds()))
