"""User administration (DESIGN 12): the use cases behind `/api/admin/users` and `gatehouse users
find|show|disable|enable|revoke|delete`, the same for both doors.

An operator sees an account's profile (the phone masked), its live sessions and its second
factors, never a secret (no hash, key, code or credential). Every action is one transaction with
its event on `user-events` and its audit record (actor `admin`, the operator's id: `admin-api`
or `cli:<login>`), then the account's sockets are told. Disabling ends every session, refresh
token and socket at once through the same path as a logout everywhere, and from then on every
sign-in of the account is refused as a wrong password is (the flows check `disabled_at`, the
storage counts a disabled account signed in nowhere)."""

from __future__ import annotations

import re
from typing import Any

from gatehouse.admin.pages import Page, decode, encode, limited
from gatehouse.domain import events
from gatehouse.domain.audit import ADMIN
from gatehouse.domain.sessions import is_alive
from gatehouse.domain.users import User, mask_phone, normalize_email
from gatehouse.errors import NotFound
from gatehouse.ports import UnitOfWork
from gatehouse.ports.audit import UserDirectory
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext, phone_of
from gatehouse.selfservice.notices import write_notice
from gatehouse.selfservice.passkeys.flow import passkey_view
from gatehouse.selfservice.profile.flow import ACCOUNT_DELETED
from gatehouse.selfservice.sessions.flow import announce_revoked, revoke_all
from gatehouse.selfservice.sessions.manage import session_view
from gatehouse.selfservice.validation import require_phone

DISABLED = "account_disabled"  # the revocation reason of a disable
REVOKED = "admin_revoked"  # ... of an operator's "sign out everywhere"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PHONE = re.compile(r"^\+?[\d\s\-().]+$")


def summary(ctx: FlowContext, user: User) -> dict[str, Any]:
    """An account as an operator sees it in a list: never a hash, and the phone masked."""
    phone = phone_of(ctx, user)
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "phone": None if phone is None else mask_phone(phone),
        "email_verified": user.email_verified_at is not None,
        "disabled": user.disabled_at is not None,
        "disabled_at": None if user.disabled_at is None else user.disabled_at.isoformat(),
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


async def find(
    ctx: FlowContext, directory: UserDirectory, query: str, cursor: str | None, limit: int
) -> Page:
    """Accounts whose email starts with `query` (all of them for an empty one), in email order,
    a page at a time; a phone number (exact, through its blind index) or an account id finds
    that one account."""
    limit = limited(limit)
    query = query.strip()
    if _UUID.match(query.lower()) or (_PHONE.match(query) and sum(c.isdigit() for c in query) > 6):
        async with ctx.reader() as uow:
            if _UUID.match(query.lower()):
                found = await uow.users.get(query.lower())
            else:
                phone = require_phone(query)
                assert phone is not None
                found = await uow.users.get_by_phone_index(ctx.blind_index("phone", phone))
        return Page([summary(ctx, found)] if found else [], None)
    after = decode(cursor).get("after")
    users = await directory.by_email_prefix(
        normalize_email(query), after if isinstance(after, str) else None, limit + 1
    )
    more = len(users) > limit
    users = users[:limit]
    next_cursor = encode({"after": users[-1].email}) if more else None
    return Page([summary(ctx, u) for u in users], next_cursor)


async def _account(uow: UnitOfWork, user_id: str) -> User:
    user = await uow.users.get(user_id) if len(user_id) <= 64 else None
    if user is None:
        raise NotFound("No such user")
    return user


async def show(ctx: FlowContext, user_id: str) -> dict[str, Any]:
    """One account with its live sessions (newest first) and its second factors: whether an
    authenticator app is on, its passkeys (id, name, dates), how many recovery codes are left."""
    async with ctx.reader() as uow:
        user = await _account(uow, user_id)
        found = await uow.sessions.list_live_for_user(user.id)
        totp = await uow.factors.totp(user.id)
        passkeys = await uow.factors.passkeys(user.id)
        left = await uow.factors.recovery_codes_left(user.id)
    now, policy = ctx.clock(), ctx.policy
    live = [s for s in found if is_alive(s, now, policy.refresh_ttl, policy.refresh_family_max)]
    return {
        **summary(ctx, user),
        "sessions": [
            {k: v for k, v in session_view(s, current=False).items() if k != "current"}
            for s in live
        ],
        "second_factors": {
            "totp": totp is not None and totp.confirmed_at is not None,
            "passkeys": [passkey_view(p) for p in passkeys],
            "recovery_codes_left": left,
        },
    }


def _by(operator: str) -> dict[str, Any]:
    return {"actor": ADMIN, "actor_id": operator}


async def disable(ctx: FlowContext, user_id: str, operator: str) -> dict[str, Any]:
    """Disable the account and end every session, refresh token and socket of it at once. An
    account already disabled stays so (recorded, nothing else written)."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await _account(uow, user_id)
        already = user.disabled_at is not None
        if not already:
            user = user.with_changes(disabled_at=now, updated_at=now)
            await uow.users.update(user)
            await revoke_all(ctx, uow, user.id, DISABLED)
            await uow.outbox.add(events.user_event(events.DISABLED, user.id, {"by": ADMIN}, now))
        reason = "already_disabled" if already else None
        record(ctx, uow, "user.disable", user_id=user.id, reason=reason, **_by(operator))
        await uow.commit()
    if not already:
        await announce_revoked(ctx, user.id, DISABLED)
    return summary(ctx, user)


async def enable(ctx: FlowContext, user_id: str, operator: str) -> dict[str, Any]:
    """Let the account sign in again (its ended sessions stay ended)."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await _account(uow, user_id)
        was_disabled = user.disabled_at is not None
        if was_disabled:
            user = user.with_changes(disabled_at=None, updated_at=now)
            await uow.users.update(user)
            await uow.outbox.add(events.user_event(events.ENABLED, user.id, {"by": ADMIN}, now))
        reason = None if was_disabled else "not_disabled"
        record(ctx, uow, "user.enable", user_id=user.id, reason=reason, **_by(operator))
        await uow.commit()
    return summary(ctx, user)


async def revoke_sessions(ctx: FlowContext, user_id: str, operator: str) -> int:
    """End every session of the account (its refresh tokens, access tokens and sockets); the
    account may sign in again. Returns how many sessions were live."""
    async with ctx.uow() as uow:
        user = await _account(uow, user_id)
        live = len(await uow.sessions.list_live_for_user(user.id))
        await revoke_all(ctx, uow, user.id, REVOKED)
        record(ctx, uow, "user.sessions.revoke", user_id=user.id, **_by(operator))
        await uow.commit()
    await announce_revoked(ctx, user.id, REVOKED)
    return live


async def delete(ctx: FlowContext, user_id: str, operator: str) -> None:
    """Erase the account as its owner's deletion does (the row with every personal field, its
    factors, its sessions), with the `deleted` event and the notice to the address it held."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await _account(uow, user_id)
        await uow.factors.remove_all(user.id)
        await uow.users.delete(user.id)
        await revoke_all(ctx, uow, user.id, ACCOUNT_DELETED)
        await uow.outbox.add(events.user_event(events.DELETED, user.id, {"by": ADMIN}, now))
        await write_notice(ctx, uow, user, ACCOUNT_DELETED, now)
        record(ctx, uow, "user.delete", user_id=user.id, **_by(operator))
        await uow.commit()
    await announce_revoked(ctx, user.id, ACCOUNT_DELETED)
