"""Sessions: refresh-token rotation with reuse detection, logout, token authentication."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.tokens import RefreshToken, hash_refresh_token, new_refresh_token
from gatehouse.domain.users import User, public_view
from gatehouse.errors import InvalidToken
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import audit
from gatehouse.selfservice.context import FlowContext, phone_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    token: str
    refresh_token: str
    user: dict[str, Any]
    expires_in: int

    def as_data(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "user": self.user,
        }


async def refresh(ctx: FlowContext, *, refresh_token: str) -> Session:
    """Rotate: the presented token is spent and a new one of the same family is returned. A token
    presented twice means it was stolen or replayed, so the whole family is revoked."""
    token_hash = hash_refresh_token(ctx.secrets.token_key, refresh_token)
    now = ctx.clock()
    async with ctx.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token_hash)
        if stored is None or stored.revoked_at is not None:
            raise InvalidToken()
        if stored.used_at is not None or not await uow.refresh_tokens.mark_used(stored.id, now):
            await uow.refresh_tokens.revoke_family(stored.family_id, now)
            await uow.outbox.add(
                events.user_event(
                    events.SESSION_REVOKED,
                    stored.user_id,
                    {"reason": "refresh_token_reuse", "session_id": stored.family_id},
                    now,
                )
            )
            await uow.commit()
            await announce_revoked(ctx, stored.user_id, "refresh_token_reuse")
            audit(
                "refresh",
                "failure",
                factor="refresh_token",
                user_id=stored.user_id,
                reason="reuse_detected_family_revoked",
            )
            raise InvalidToken()
        if stored.expires_at <= now or stored.family_expires_at <= now:
            raise InvalidToken()
        user = await uow.users.get(stored.user_id)
        if user is None:
            raise InvalidToken()
        session = await open_session(
            ctx, uow, user, family_id=stored.family_id, family_expires=stored.family_expires_at
        )
        await uow.commit()
    audit("refresh", "success", factor="refresh_token", user_id=user.id)
    return session


async def logout(ctx: FlowContext, *, refresh_token: str, everywhere: bool = False) -> None:
    """Revoke the session the refresh token belongs to, or with `everywhere` every session of
    its user (a live session proves who asks). Unknown tokens are silently accepted."""
    token_hash = hash_refresh_token(ctx.secrets.token_key, refresh_token)
    now = ctx.clock()
    async with ctx.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token_hash)
        if stored is None:
            return
        if everywhere and stored.revoked_at is None:
            await revoke_all(ctx, uow, stored.user_id, "logout_everywhere")
            await uow.commit()
            await announce_revoked(ctx, stored.user_id, "logout_everywhere")
            audit("logout_everywhere", "success", factor="refresh_token", user_id=stored.user_id)
            return
        revoked = await uow.refresh_tokens.revoke_family(stored.family_id, now)
        if revoked:
            await uow.outbox.add(
                events.user_event(
                    events.SESSION_REVOKED,
                    stored.user_id,
                    {"reason": "logout", "session_id": stored.family_id},
                    now,
                )
            )
        await uow.commit()
    if revoked:
        await announce_revoked(ctx, stored.user_id, "logout")
    audit("logout", "success", factor="refresh_token", user_id=stored.user_id)


async def revoke_all(ctx: FlowContext, uow: UnitOfWork, user_id: str, reason: str) -> None:
    """Revoke every session of a user inside the caller's transaction, with its event."""
    now = ctx.clock()
    await uow.refresh_tokens.revoke_user(user_id, now)
    await uow.outbox.add(
        events.user_event(
            events.SESSION_REVOKED, user_id, {"reason": reason, "session_id": "*"}, now
        )
    )


async def announce_revoked(ctx: FlowContext, user_id: str, reason: str) -> None:
    """Tell the user's open sockets, after the commit. Best effort: the revocation itself is
    already durable, and a missed push only delays the client noticing."""
    try:
        await ctx.notifier.emit(f"user:{user_id}", "session.revoked", {"reason": reason})
    except Exception as exc:
        log.warning("could not push session.revoked: %s", type(exc).__name__)


async def open_session(
    ctx: FlowContext, uow: UnitOfWork, user: User, *, family_id: str, family_expires: Any
) -> Session:
    now = ctx.clock()
    plaintext, token_hash = new_refresh_token(ctx.secrets.token_key)
    family_expires = family_expires or now + ctx.policy.refresh_family_max
    await uow.refresh_tokens.add(
        RefreshToken(
            id=events.new_id(),
            family_id=family_id,
            user_id=user.id,
            token_hash=token_hash,
            created_at=now,
            expires_at=min(now + ctx.policy.refresh_ttl, family_expires),
            family_expires_at=family_expires,
        )
    )
    access, claims = ctx.tokens.issue(user.id, family_id, now)
    return Session(
        token=access,
        refresh_token=plaintext,
        user=public_view(user, phone_of(ctx, user), reveal_phone=False),
        expires_in=int((claims.exp - now).total_seconds()),
    )
