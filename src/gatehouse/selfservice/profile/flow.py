"""The signed-in user's own account: read, update, delete."""

from __future__ import annotations

from typing import Any

from gatehouse.domain import events
from gatehouse.domain.users import User, public_view
from gatehouse.errors import InvalidInput
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.context import FlowContext, phone_of
from gatehouse.selfservice.sessions.flow import announce_revoked, authenticate, revoke_all
from gatehouse.selfservice.sessions.manage import prove_password, require_recent
from gatehouse.selfservice.validation import (
    require_image,
    require_name,
    require_password,
    require_phone,
)


async def current_user(ctx: FlowContext, uow: UnitOfWork, token: str) -> User:
    """The user an access token speaks for, if the token is valid, its session was not revoked
    (logout, password change, reuse detection) and the account still exists."""
    user, _claims = await authenticate(ctx, uow, token)
    return user


async def read(ctx: FlowContext, *, token: str) -> dict[str, Any]:
    async with ctx.reader() as uow:
        user = await current_user(ctx, uow, token)
    return public_view(user, phone_of(ctx, user))


async def update(
    ctx: FlowContext,
    *,
    token: str,
    name: str | None = None,
    phone: str | None = None,
    image: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
) -> dict[str, Any]:
    """Change the given fields; an empty phone or image removes it. A new password needs the
    current one and ends every session (the caller logs in again). A new phone needs a recent
    authentication of the session, or the current password."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = require_name(name)
    if phone is not None:
        clean = require_phone(phone)
        changes.update(ctx.phone_fields(clean))
    if image is not None:
        changes["image"] = require_image(image)
    if password is not None:
        require_password(password, common=ctx.common_passwords)
        if not current_password:
            raise InvalidInput(
                "The current password is required to set a new one",
                errors=[{"field": "current_password", "message": "required"}],
            )
    async with ctx.reader() as uow:
        user, claims = await authenticate(ctx, uow, token)
    # Sensitive changes: the password in the body proves the owner is here, else the session
    # must have proved it recently (a stolen access token alone must not move the recovery
    # phone). A password change always carries it (checked above).
    action = "password.change" if password is not None else "phone.change"
    if current_password is not None and (password is not None or phone is not None):
        wrong = "The current password is wrong"
        await prove_password(ctx, user, current_password, action=action, message=wrong)
    elif phone is not None:
        require_recent(ctx, claims, user.id, action)
    if password is not None:
        changes["password_hash"] = await ctx.hasher.hash(password)
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await current_user(ctx, uow, token)  # again, inside the writing transaction
        updated = user.with_changes(**changes, updated_at=now)
        await uow.users.update(updated)
        fields = sorted(k.replace("_ciphertext", "").replace("_hash", "") for k in changes)
        fields = [f for f in fields if f != "phone_index"]
        await uow.outbox.add(events.user_event(events.UPDATED, user.id, {"fields": fields}, now))
        if password is not None:
            await revoke_all(ctx, uow, user.id, "password_changed")
        await uow.commit()
    if password is not None:
        await announce_revoked(ctx, user.id, "password_changed")
    return public_view(updated, phone_of(ctx, updated))


async def delete(ctx: FlowContext, *, token: str, password: str) -> str:
    """Erase the account (the row holds every personal field) after re-checking the password;
    every session ends. Returns the deleted user's id."""
    async with ctx.uow() as uow:
        user = await current_user(ctx, uow, token)
    # The password is the proof of presence a deletion needs, whatever the session's auth_time.
    await prove_password(ctx, user, password, action="account.delete")
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await current_user(ctx, uow, token)
        await uow.users.delete(user.id)
        await revoke_all(ctx, uow, user.id, "account_deleted")
        await uow.outbox.add(events.user_event(events.DELETED, user.id, {}, now))
        await uow.commit()
    await announce_revoked(ctx, user.id, "account_deleted")
    return user.id
