"""A verified sign-up made a user: in a unit of work (every door that finishes one), or in one
step where the database allows it (`ports.signup`), with the same rows and the same log line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.users import PendingRegistration, User, has_password, public_view
from gatehouse.ports import UnitOfWork
from gatehouse.ports.signup import SignUpFinish, SignUpFinishes
from gatehouse.selfservice.audit import audit, audit_entry, record
from gatehouse.selfservice.context import FlowContext, phone_of

ACTION = "account.create"


@dataclass(frozen=True)
class SignedUp:
    """A finished sign-up: the new user's view, and whether the account has no password yet (a
    contested sign-up's: its owner sets one through password recovery)."""

    user: dict[str, Any]
    password_required: bool


async def live_pending(ctx: FlowContext, uow: UnitOfWork, email: str) -> PendingRegistration | None:
    """The email's pending registration, unless it has expired."""
    pending = await uow.pending.get_by_email(email)
    return pending if pending is not None and pending.expires_at > ctx.clock() else None


def signed_up(ctx: FlowContext, user: User) -> SignedUp:
    view = public_view(user, phone_of(ctx, user), reveal_phone=False)
    return SignedUp(view, password_required=not has_password(user.password_hash))


def verified_event(user_id: str, email: str, verified: datetime) -> events.OutboxMessage:
    """The event of a new, verified account."""
    return events.user_event(events.VERIFIED, user_id, {"email": email}, verified)


async def add_user(ctx: FlowContext, uow: UnitOfWork, user: User) -> None:
    await uow.users.add(user)
    record(ctx, uow, ACTION, factor="otp", user_id=user.id)
    verified = user.email_verified_at or ctx.clock()  # always set
    await uow.outbox.add(verified_event(user.id, user.email, verified))


async def finish(ctx: FlowContext, uow: UnitOfWork, pending: PendingRegistration) -> SignedUp:
    """The sign-up made a verified user of the same id, in `uow`, committed."""
    now = ctx.clock()
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
    await add_user(ctx, uow, user)
    await uow.pending.delete(pending.id)
    await uow.commit()
    return signed_up(ctx, user)


async def finish_at_once(
    ctx: FlowContext, finishes: SignUpFinishes, pending_id: str, email: str
) -> User | None:
    """`finish` of the sign-up `pending_id` (of `email`) in one step: the new user, or None
    when the sign-up went or expired meanwhile (nothing written)."""
    now = ctx.clock()
    done = SignUpFinish(
        pending_id=pending_id,
        now=now,
        event=verified_event(pending_id, email, now),
        record=audit_entry(ctx, ACTION, factor="otp", user_id=pending_id),
    )
    user = await finishes.finish(done)
    if user is not None:
        audit(ACTION, "success", factor="otp", user_id=user.id)
    return user
