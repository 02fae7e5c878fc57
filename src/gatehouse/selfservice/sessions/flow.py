"""Sessions: opened at sign-in, refresh-token rotation with reuse detection, logout, token
authentication."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.sessions import AAL1, PWD, SessionRecord, clip_user_agent
from gatehouse.domain.tokens import (
    AccessClaims,
    RefreshToken,
    hash_refresh_token,
    new_refresh_token,
)
from gatehouse.domain.users import User, public_view
from gatehouse.errors import InvalidToken, TokenError
from gatehouse.ports import Clock, UnitOfWork
from gatehouse.ports.rotation import Rotation, Rotations
from gatehouse.selfservice.audit import audit, audit_entry, record, refused
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


async def refresh(ctx: FlowContext, *, refresh_token: str) -> Session:
    """Rotate: the presented token is spent and a new one of the same family is returned. A token
    presented twice means it was stolen or replayed, so the whole family is revoked."""
    token_hash = hash_refresh_token(ctx.secrets.token_key, refresh_token)
    if ctx.rotations is not None:
        rotated = await _rotate_at_once(ctx, ctx.rotations, token_hash)
        if rotated is not None:
            return rotated
    now = ctx.clock()
    async with ctx.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token_hash)
        if stored is None:
            raise InvalidToken()  # names no account: a log line at most (the door's)
        if stored.revoked_at is not None:
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="revoked")
            raise InvalidToken()
        if stored.used_at is not None or not await uow.refresh_tokens.mark_used(stored.id, now):
            await uow.refresh_tokens.revoke_family(stored.family_id, now)
            await uow.sessions.revoke(stored.family_id, now, "refresh_token_reuse")
            await uow.outbox.add(
                events.user_event(
                    events.SESSION_REVOKED,
                    stored.user_id,
                    {"reason": "refresh_token_reuse", "session_id": stored.family_id},
                    now,
                )
            )
            reason = "reuse_detected_family_revoked"
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason=reason)
            await uow.commit()
            await announce_revoked(ctx, stored.user_id, "refresh_token_reuse", stored.family_id)
            raise InvalidToken()
        if stored.expires_at <= now or stored.family_expires_at <= now:
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="expired")
            raise InvalidToken()
        # The session's row, marked used, with its user: one statement where the database allows.
        signed_in = await uow.sessions.touch(stored.family_id, now)
        if signed_in is None:  # the session ended, or its account was disabled or deleted
            reason = "session_ended"
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason=reason)
            raise InvalidToken()
        live, user = signed_in
        session = await _issue(ctx, uow, user, live, stored.family_expires_at)
        record(ctx, uow, "refresh", factor=FACTOR, user_id=user.id)
        await uow.commit()
    return session


async def _rotate_at_once(
    ctx: FlowContext, rotations: Rotations, token_hash: str
) -> Session | None:
    """The path below when all is well, in one step where the database allows it (the same
    rows written: `ports.rotation`); None when anything is not, and then nothing was written."""
    now = ctx.clock()
    plaintext, replacement_hash = new_refresh_token(ctx.secrets.token_key)
    rotation = Rotation(
        presented_hash=token_hash,
        now=now,
        replacement_id=events.new_id(),
        replacement_hash=replacement_hash,
        replacement_expires_at=now + ctx.policy.refresh_ttl,
        record=audit_entry(ctx, "refresh", factor=FACTOR),
    )
    rotated = await rotations.rotate(rotation)
    if rotated is None:
        return None
    live, user = rotated
    audit("refresh", "success", factor=FACTOR, user_id=user.id)
    return _session(ctx, user, live, plaintext, now)


async def logout(ctx: FlowContext, *, refresh_token: str, everywhere: bool = False) -> None:
    """Revoke the session the refresh token belongs to, or with `everywhere` every session of
    its user (a live session proves who asks). Unknown tokens are silently accepted."""
    token_hash = hash_refresh_token(ctx.secrets.token_key, refresh_token)
    async with ctx.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token_hash)
        if stored is None:
            return
        if everywhere and stored.revoked_at is None:
            await revoke_all(ctx, uow, stored.user_id, "logout_everywhere")
            record(ctx, uow, "logout_everywhere", factor=FACTOR, user_id=stored.user_id)
            await uow.commit()
            await announce_revoked(ctx, stored.user_id, "logout_everywhere")
            return
        revoked = await end_session(ctx, uow, stored.user_id, stored.family_id, "logout")
        record(ctx, uow, "logout", factor=FACTOR, user_id=stored.user_id)
        await uow.commit()
    if revoked:
        await announce_revoked(ctx, stored.user_id, "logout", stored.family_id)


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
    """A new session for a user who just proved `amr` (a password by default): its row and its
    first refresh token, in the caller's transaction."""
    now = ctx.clock()
    opened = SessionRecord(
        id=family_id,
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        auth_time=now,
        user_agent=clip_user_agent(user_agent),
        amr=amr,
        aal=aal,
    )
    await uow.sessions.add(opened)
    return await _issue(
        ctx, uow, user, opened, family_expires or now + ctx.policy.refresh_family_max
    )


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


async def _issue(
    ctx: FlowContext, uow: UnitOfWork, user: User, session: SessionRecord, family_expires: datetime
) -> Session:
    """A new refresh token of the session (in the caller's transaction) and an access token."""
    now = ctx.clock()
    plaintext, token_hash = new_refresh_token(ctx.secrets.token_key)
    await uow.refresh_tokens.add(
        RefreshToken(
            id=events.new_id(),
            family_id=session.id,
            user_id=user.id,
            token_hash=token_hash,
            created_at=now,
            expires_at=min(now + ctx.policy.refresh_ttl, family_expires),
            family_expires_at=family_expires,
        )
    )
    return _session(ctx, user, session, plaintext, now)


def _session(
    ctx: FlowContext, user: User, session: SessionRecord, refresh_token: str, now: datetime
) -> Session:
    access, claims = issue_access(ctx, session, now)
    return Session(
        token=access,
        refresh_token=refresh_token,
        user=public_view(user, phone_of(ctx, user), reveal_phone=False),
        expires_in=int((claims.exp - now).total_seconds()),
    )
