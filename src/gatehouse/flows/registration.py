"""Sign-up: register (pending user + emailed code), verify the code (permanent user), resend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.codes import CodeCheck, Purpose, generate_code, looks_like_code
from gatehouse.domain.users import PendingRegistration, User, normalize_email, public_view
from gatehouse.errors import Conflict, InvalidCode
from gatehouse.flows.context import PHONE_CONTEXT, FlowContext, phone_of
from gatehouse.flows.validation import require_name, require_password, require_phone
from gatehouse.ports import UnitOfWork

PURPOSE = Purpose.REGISTER


@dataclass(frozen=True)
class Accepted:
    """What register and resend answer, identical for new, pending and existing emails."""

    email: str
    expires_in: int


async def register(
    ctx: FlowContext, *, name: str, email: str, password: str, phone: str | None = None
) -> Accepted:
    email = normalize_email(email)
    name = require_name(name)
    require_password(password)
    phone = require_phone(phone)
    # Hash before looking anything up: existing and new emails take the same time.
    password_hash = await ctx.hasher.hash(password)
    now = ctx.clock()
    async with ctx.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            # No enumeration: same answer to the caller; the owner learns of the attempt by mail.
            await uow.outbox.add(
                events.delivery(
                    key=email,
                    channel="email",
                    to=email,
                    template="account-exists",
                    now=now,
                    expires_at=now + ctx.policy.code_ttl,
                )
            )
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
        await _send_code(ctx, uow, pending)
        await uow.outbox.add(
            events.user_event(events.REGISTERED, pending.id, {"email": email}, now)
        )
        await uow.commit()
    return _accepted(ctx, email)


async def resend(ctx: FlowContext, *, email: str) -> Accepted:
    email = normalize_email(email)
    async with ctx.uow() as uow:
        pending = await uow.pending.get_by_email(email)
        if pending is not None and pending.expires_at > ctx.clock():
            await _send_code(ctx, uow, pending)
            await uow.commit()
    return _accepted(ctx, email)


async def verify(ctx: FlowContext, *, email: str, otp: str) -> dict[str, Any]:
    """Turn the pending registration into a user if the code is right; returns the user view."""
    email = normalize_email(email)
    otp = otp.strip()
    if not looks_like_code(otp):
        raise InvalidCode()
    subject = ctx.code_subject(PURPOSE, email)
    code_hash = ctx.code_hash(PURPOSE, email, otp)
    result = await ctx.codes.check(PURPOSE, subject, code_hash)
    if result is not CodeCheck.OK:
        raise InvalidCode()
    try:
        return await _create_user(ctx, email)
    except (InvalidCode, Conflict):
        raise
    except Exception:
        # The code was consumed but the user not created (database down): put the code back so
        # the person can simply try again once we recover.
        ttl = int(ctx.policy.code_ttl.total_seconds())
        await ctx.codes.restore(PURPOSE, subject, code_hash, ttl, ctx.policy.code_attempts)
        raise


async def _create_user(ctx: FlowContext, email: str) -> dict[str, Any]:
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
        await uow.users.add(user)
        await uow.pending.delete(pending.id)
        await uow.outbox.add(
            events.user_event(events.VERIFIED, user.id, {"email": user.email}, now)
        )
        await uow.commit()
    return public_view(user, phone_of(ctx, user))


async def _send_code(ctx: FlowContext, uow: UnitOfWork, pending: PendingRegistration) -> None:
    """Store the code's HMAC and queue its delivery; the plaintext exists only encrypted."""
    now = ctx.clock()
    code = generate_code()
    ttl = int(ctx.policy.code_ttl.total_seconds())
    await ctx.codes.put(
        PURPOSE,
        ctx.code_subject(PURPOSE, pending.email),
        ctx.code_hash(PURPOSE, pending.email, code),
        ttl,
        ctx.policy.code_attempts,
    )
    message_id = events.new_id()
    await uow.outbox.add(
        events.delivery(
            message_id=message_id,
            key=pending.id,
            channel="email",
            to=pending.email,
            template="verify-email",
            now=now,
            expires_at=now + ctx.policy.code_ttl,
            code_ciphertext=ctx.keyring.encrypt(code, events.code_context(message_id)),
            variables={"name": pending.name, "minutes": str(ttl // 60)},
        )
    )


def _accepted(ctx: FlowContext, email: str) -> Accepted:
    return Accepted(email=email, expires_in=int(ctx.policy.code_ttl.total_seconds()))
