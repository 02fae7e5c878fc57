"""Sessions: opened at sign-in, ended (one, or every one of a user), and access-token
authentication against them. Refresh-token rotation and logout are `rotation.py`'s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.sessions import AAL1, PWD, SessionRecord, clip_user_agent
from gatehouse.domain.tokens import (
    AccessClaims,
    new_session_refresh,
)
from gatehouse.domain.users import User, public_view
from gatehouse.errors import InvalidToken, TokenError
from gatehouse.ports import Clock, UnitOfWork
from gatehouse.selfservice.audit import audit
from gatehouse.selfservice.context import FlowContext, phone_of
from gatehouse.selfservice.sessions.cache import SignedInCache

log = logging.getLogger(__name__)
FACTOR = "refresh_token"


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


async def authenticate(ctx: FlowContext, uow: UnitOfWork, token: str) -> tuple[User, AccessClaims]:
    """The user an access token speaks for, and its claims, if the token is valid, its session
    live (not logged out, deleted or ended by a password change) and the account still there."""
    claims = _verified(ctx, token)
    return _alive(await uow.users.get_signed_in(claims.sub, claims.sid), claims), claims


def _verified(ctx: FlowContext, token: str) -> AccessClaims:
    try:
        return ctx.tokens.verify(token, ctx.clock())
    except TokenError as exc:
        audit("token", "failure", factor="access_token", reason="invalid")
        raise InvalidToken() from exc


def _alive(user: User | None, claims: AccessClaims) -> User:
    if user is None:
        audit("token", "failure", factor="access_token", user_id=claims.sub, reason="revoked")
        raise InvalidToken()
    return user


async def signed_in_user(ctx: FlowContext, token: str) -> User:
    """`authenticate` for a read outside any transaction: answered from the process's
    signed-in cache while its channel is heard (`cache.py`), else from the database."""
    user, _held = await signed_in(ctx, token)
    return user


@dataclass(frozen=True, slots=True)
class Held:
    """What a read from the signed-in cache rests on: `current()` while the token has not
    expired and the cache still holds this very user for its session. Any announcement about
    the session or the user, the channel falling silent, or the entry's age drops or replaces
    that entry (`cache.py`), so an answer derived from the user alone may be given again to
    the same token exactly while this holds."""

    cache: SignedInCache
    clock: Clock
    claims: AccessClaims
    user: User

    def current(self) -> bool:
        claims = self.claims
        return self.clock() < claims.exp and self.cache.get(claims.sid, claims.sub) is self.user


async def signed_in(ctx: FlowContext, token: str) -> tuple[User, Held | None]:
    """`signed_in_user`, and what its answer rests on when it came from (or went into) the
    signed-in cache; None when it did not."""
    cache = ctx.signed_in
    if cache is None:
        async with ctx.reader() as uow:
            user, _claims = await authenticate(ctx, uow, token)
        return user, None
    claims = _verified(ctx, token)
    held = cache.get(claims.sid, claims.sub)
    if held is None:
        ticket = cache.ticket()
        async with ctx.reader() as uow:
            held = _alive(await uow.users.get_signed_in(claims.sub, claims.sid), claims)
        cache.put(ticket, claims.sid, held)
    return held, Held(cache, ctx.clock, claims, held)


async def end_session(
    ctx: FlowContext, uow: UnitOfWork, user_id: str, session_id: str, reason: str
) -> bool:
    """End one session inside the caller's transaction, with its event if anything of it was
    live (True then). Its refresh tokens first, then the session: the order a rotation locks
    them in (storage/pg_refresh.py), so the two never wait on each other in a cycle."""
    now = ctx.clock()
    tokens = await uow.refresh_tokens.revoke_family(session_id, now)
    revoked = await uow.sessions.revoke(session_id, now, reason) or bool(tokens)
    if revoked:
        await uow.outbox.add(
            events.user_event(
                events.SESSION_REVOKED, user_id, {"reason": reason, "session_id": session_id}, now
            )
        )
    return revoked


async def revoke_all(ctx: FlowContext, uow: UnitOfWork, user_id: str, reason: str) -> None:
    """Revoke every session of a user inside the caller's transaction, with its event."""
    now = ctx.clock()
    await uow.refresh_tokens.revoke_user(user_id, now)
    await uow.sessions.revoke_user(user_id, now, reason)
    await uow.outbox.add(
        events.user_event(
            events.SESSION_REVOKED, user_id, {"reason": reason, "session_id": "*"}, now
        )
    )


async def announce_revoked(
    ctx: FlowContext, user_id: str, reason: str, session_id: str | None = None
) -> None:
    """Tell the session's sockets (every one of the user's without `session_id`), after the
    commit. Best effort: the revocation itself is already durable, and a missed push only
    delays the client noticing."""
    try:
        if session_id is None:
            await ctx.notifier.emit(f"user:{user_id}", "session.revoked", {"reason": reason})
        else:
            await ctx.notifier.session_revoked(user_id, session_id, reason)
    except Exception as exc:
        log.warning("could not push session.revoked: %s", type(exc).__name__)


async def open_session(
    ctx: FlowContext,
    uow: UnitOfWork,
    user: User,
    *,
    family_id: str,
    family_expires: datetime | None = None,
    user_agent: str | None = None,
    amr: tuple[str, ...] = (PWD,),
    aal: int = AAL1,
) -> Session:
    """A new session for a user who just proved `amr` (a password by default), its row holding
    its first refresh token, in the caller's transaction."""
    now = ctx.clock()
    opened, refresh_token = new_session(
        ctx,
        user,
        now,
        family_id,
        family_expires=family_expires,
        user_agent=user_agent,
        amr=amr,
        aal=aal,
    )
    await uow.sessions.add(opened)
    return session_of(ctx, user, opened, refresh_token, now)


def new_session(
    ctx: FlowContext,
    user: User,
    now: datetime,
    family_id: str,
    *,
    family_expires: datetime | None = None,
    user_agent: str | None = None,
    amr: tuple[str, ...] = (PWD,),
    aal: int = AAL1,
) -> tuple[SessionRecord, str]:
    """The row of a session opened at `now` and its first refresh token, not yet stored."""
    end = family_expires or now + ctx.policy.refresh_family_max
    token, token_hash = new_session_refresh(ctx.secrets.token_key, family_id, 1)
    opened = SessionRecord(
        id=family_id,
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        auth_time=now,
        user_agent=clip_user_agent(user_agent),
        amr=amr,
        aal=aal,
        refresh_generation=token.generation,
        refresh_hash=token_hash,
        refresh_expires_at=min(now + ctx.policy.refresh_ttl, end),
        expires_at=end,
    )
    return opened, token.plaintext


def issue_access(
    ctx: FlowContext, session: SessionRecord, now: datetime
) -> tuple[str, AccessClaims]:
    """An access token of `session`, carrying when and how it last proved a factor."""
    return ctx.tokens.issue(
        session.user_id,
        session.id,
        now,
        auth_time=session.auth_time,
        amr=session.amr,
        aal=session.aal,
    )


def session_of(
    ctx: FlowContext, user: User, session: SessionRecord, refresh_token: str, now: datetime
) -> Session:
    access, claims = issue_access(ctx, session, now)
    return Session(
        token=access,
        refresh_token=refresh_token,
        user=public_view(user, phone_of(ctx, user), reveal_phone=False),
        expires_in=int((claims.exp - now).total_seconds()),
    )
