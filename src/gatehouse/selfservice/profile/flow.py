"""The signed-in user's own account: read, update, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.users import User, public_view
from gatehouse.errors import InvalidInput
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext, phone_of
from gatehouse.selfservice.mfa.proof import step_up
from gatehouse.selfservice.notices import push_notice, write_notice
from gatehouse.selfservice.profile.phone import CLEARED, Pending, limit_change, propose
from gatehouse.selfservice.sessions.flow import (
    Held,
    announce_revoked,
    authenticate,
    revoke_all,
    signed_in,
)
from gatehouse.selfservice.validation import (
    require_image,
    require_name,
    require_password,
    require_phone,
)

# The notices' kinds, which are also the revocation reasons of the sessions they end.
PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a name, not a password
ACCOUNT_DELETED = "account_deleted"
PHONE_REMOVED = "phone_removed"
# The columns of a change the `updated` event names (by their public field name).
_PUBLIC = ("name", "phone_ciphertext", "image", "password_hash")


async def current_user(ctx: FlowContext, uow: UnitOfWork, token: str) -> User:
    """The user an access token speaks for, if the token is valid, its session was not revoked
    (logout, password change, reuse detection) and the account still exists."""
    user, _claims = await authenticate(ctx, uow, token)
    return user


async def read(ctx: FlowContext, *, token: str) -> dict[str, Any]:
    return (await read_held(ctx, token=token))[0]


async def read_held(ctx: FlowContext, *, token: str) -> tuple[dict[str, Any], Held | None]:
    """The profile, and what it rests on when it was read from the signed-in cache: the view
    is the user's alone, so it stays the answer while that holds (`sessions.flow.Held`)."""
    user, held = await signed_in(ctx, token)
    return public_view(user, phone_of(ctx, user)), held


@dataclass(frozen=True)
class Updated:
    """What a profile update answers: the user, and a new phone's pending state (its number
    masked, its code's lifetime) when the update asked for one."""

    user: dict[str, Any]
    pending: Pending | None = None

    def as_data(self) -> dict[str, Any]:
        if self.pending is None:
            return {"user": self.user}
        return {
            "user": self.user,
            "phone_pending": self.pending.masked,
            "expires_in": self.pending.expires_in,
        }


async def update(
    ctx: FlowContext,
    *,
    token: str,
    name: str | None = None,
    phone: str | None = None,
    image: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
    code: str | None = None,
) -> Updated:
    """Change the given fields; an empty phone or image removes it. A new password needs the
    current one and ends every session (the caller logs in again). A phone, new or removed, needs
    a recent authentication of the session, or the current password. A new phone is only
    pending: a code goes to it (`phone.propose`), the account's phone changes once it comes back
    (`phone.verify`); the other fields change at once."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = require_name(name)
    new_phone = require_phone(phone)
    removing = phone is not None and new_phone is None
    if removing:
        # A removal needs no proof of a number: at once, and whatever was pending goes too.
        changes.update(ctx.phone_fields(None), **CLEARED)
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
    # With a second factor and no recent sign-in, its `code` comes with the password too.
    action = "password.change" if password is not None else "phone.change"
    if password is not None or phone is not None:
        await step_up(
            ctx, user, claims, current_password=current_password, code=code, action=action
        )
    if new_phone is not None:
        await limit_change(ctx, user.id, new_phone)
    if password is not None:
        changes["password_hash"] = await ctx.hasher.hash(password)
    fields = sorted(_public_name(k) for k in changes if k in _PUBLIC)
    now = ctx.clock()
    pending = None
    async with ctx.uow() as uow:
        user = await current_user(ctx, uow, token)  # again, inside the writing transaction
        if new_phone is not None:
            staged, pending = await propose(ctx, uow, user, new_phone, now)
            changes.update(staged)
        updated = user.with_changes(**changes, updated_at=now)
        await uow.users.update(updated)
        if fields:  # a pending phone alone changes nothing anyone else may know of yet
            await uow.outbox.add(
                events.user_event(events.UPDATED, user.id, {"fields": fields}, now)
            )
        removed = removing and user.phone_ciphertext is not None
        if removed:  # a recovery channel gone: its owner hears of it
            await write_notice(ctx, uow, updated, PHONE_REMOVED, now)
        if password is not None:
            await write_notice(ctx, uow, updated, PASSWORD_CHANGED, now)
            await revoke_all(ctx, uow, user.id, PASSWORD_CHANGED)
        touched = ",".join([*fields, *(["phone_pending"] if new_phone is not None else [])])
        record(ctx, uow, "account.update", factor="access_token", user_id=user.id, reason=touched)
        await uow.commit()
    if removed:
        await push_notice(ctx, user.id, PHONE_REMOVED, now)
    if password is not None:
        # The notice first: an open page hears why before its socket is closed.
        await push_notice(ctx, user.id, PASSWORD_CHANGED, now)
        await announce_revoked(ctx, user.id, PASSWORD_CHANGED)
    return Updated(public_view(updated, phone_of(ctx, updated)), pending)


def _public_name(column: str) -> str:
    return column.removesuffix("_ciphertext").removesuffix("_hash")


async def delete(ctx: FlowContext, *, token: str, password: str, code: str | None = None) -> str:
    """Erase the account (the row holds every personal field, its factors go too) after
    re-checking the password, and the second factor's `code` when the account has one and the
    session did not sign in recently; every session ends. Returns the deleted user's id."""
    async with ctx.reader() as uow:
        user, claims = await authenticate(ctx, uow, token)
    # The password is the proof of presence a deletion needs, whatever the session's auth_time.
    await step_up(ctx, user, claims, current_password=password, code=code, action="account.delete")
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await current_user(ctx, uow, token)
        await uow.factors.remove_all(user.id)
        await uow.users.delete(user.id)
        await revoke_all(ctx, uow, user.id, ACCOUNT_DELETED)
        await uow.outbox.add(events.user_event(events.DELETED, user.id, {}, now))
        # To the address the row held: the mail goes out though the account is gone.
        await write_notice(ctx, uow, user, ACCOUNT_DELETED, now)
        record(ctx, uow, "account.delete", factor="access_token", user_id=user.id)
        await uow.commit()
    await push_notice(ctx, user.id, ACCOUNT_DELETED, now)  # before the sockets close, as above
    await announce_revoked(ctx, user.id, ACCOUNT_DELETED)
    return user.id
