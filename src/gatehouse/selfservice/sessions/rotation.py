"""Refresh tokens: rotation with reuse detection, and logout by refresh token.

A session's token is kept in its row (`domain.tokens.SessionRefresh`, migration 0009); a token
of a session opened before is a row of refresh_tokens until its first refresh here moves it."""

from __future__ import annotations

import logging
from datetime import datetime

from gatehouse.domain.crypto import same
from gatehouse.domain.sessions import RefreshStep, SessionRecord
from gatehouse.domain.tokens import (
    SessionRefresh,
    hash_refresh_token,
    new_session_refresh,
    read_session_refresh,
)
from gatehouse.errors import InvalidToken
from gatehouse.ports import UnitOfWork
from gatehouse.ports.rotation import Rotation, Rotations
from gatehouse.selfservice.audit import audit, audit_entry, record, refused
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.sessions.flow import (
    FACTOR,
    Session,
    announce_revoked,
    end_session,
    revoke_all,
    session_of,
)

log = logging.getLogger(__name__)


async def refresh(ctx: FlowContext, *, refresh_token: str) -> Session:
    """Rotate: the presented token is spent and the session's next one is returned. A token
    presented twice means it was stolen or replayed, so the whole session is revoked."""
    key = ctx.secrets.token_key
    presented = read_session_refresh(key, refresh_token)
    if presented is None:  # a refresh_tokens row's (a session from before 0009), or nothing
        return await _refresh_row(ctx, hash_refresh_token(key, refresh_token))
    token_hash = hash_refresh_token(key, refresh_token)
    if ctx.rotations is not None:
        rotated = await _rotate_at_once(ctx, ctx.rotations, presented, token_hash)
        if rotated is not None:
            return rotated
    now = ctx.clock()
    async with ctx.uow() as uow:
        stored = await uow.sessions.get(presented.session_id)
        if stored is None or stored.refresh_hash is None or stored.expires_at is None:
            raise InvalidToken()  # names no account: a log line at most (the door's)
        if stored.revoked_at is not None:
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="revoked")
            raise InvalidToken()
        standing = _standing(presented, token_hash, stored)
        if standing == SPENT:  # presented before: replayed
            await _reused(ctx, uow, stored.user_id, stored.id)
        if standing == UNISSUED:
            _unissued(ctx, uow, "refresh", stored)
            raise InvalidToken()
        if _expired(stored.refresh_expires_at, now) or _expired(stored.expires_at, now):
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="expired")
            raise InvalidToken()
        token, step = _next(ctx, stored, stored.expires_at)
        if not await uow.sessions.rotate(step):  # the row moved on since it was read
            await _lost_race(ctx, uow, stored)
        session = await _touch(ctx, uow, stored.user_id, token)
        await uow.commit()
    return session


SPENT, CURRENT, UNISSUED = "spent", "current", "unissued"


def _standing(presented: SessionRefresh, token_hash: str, row: SessionRecord) -> str:
    """What a token with a good tag is to its session's row: an earlier generation (spent), the
    current one, or neither (a generation never reached, or the current one's number around
    another secret): a tag only the token key makes, on a token this service never issued."""
    if presented.generation < row.refresh_generation:
        return SPENT
    if presented.generation == row.refresh_generation and same(token_hash, row.refresh_hash or ""):
        return CURRENT
    return UNISSUED


def _unissued(ctx: FlowContext, uow: UnitOfWork, action: str, row: SessionRecord) -> None:
    """Recorded and logged, and nothing of it trusted: whoever made it holds the token key."""
    log.warning(
        "%s: a refresh token with a good tag that was never issued (session %s): "
        "the token key may have leaked",
        action,
        row.id,
    )
    refused(ctx, uow, action, factor=FACTOR, user_id=row.user_id, reason="unissued_token")


def _expired(at: datetime | None, now: datetime) -> bool:
    return at is None or at <= now


def _next(
    ctx: FlowContext, row: SessionRecord, session_end: datetime
) -> tuple[SessionRefresh, RefreshStep]:
    """The session's next token, and the step that moves its row from the current one."""
    now = ctx.clock()
    generation = row.refresh_generation
    token, token_hash = new_session_refresh(ctx.secrets.token_key, row.id, generation + 1)
    step = RefreshStep(
        session_id=row.id,
        generation=generation,
        current_hash=row.refresh_hash,
        next_hash=token_hash,
        next_expires_at=min(now + ctx.policy.refresh_ttl, session_end),
        session_end=session_end,
        now=now,
    )
    return token, step


async def _touch(ctx: FlowContext, uow: UnitOfWork, user_id: str, token: SessionRefresh) -> Session:
    """After the rotation: the session marked used and read with its user (one statement where
    the database allows), the success recorded. Refuses (raises) a session that ended or
    whose account was disabled or deleted."""
    now = ctx.clock()
    signed_in = await uow.sessions.touch(token.session_id, now)
    if signed_in is None:
        reason = "session_ended"
        refused(ctx, uow, "refresh", factor=FACTOR, user_id=user_id, reason=reason)
        raise InvalidToken()
    live, user = signed_in
    record(ctx, uow, "refresh", factor=FACTOR, user_id=user.id)
    return session_of(ctx, user, live, token.plaintext, now)


async def _lost_race(ctx: FlowContext, uow: UnitOfWork, row: SessionRecord) -> None:
    """The row moved on between its read and the rotation: revoked meanwhile (a logout, a
    password change, an admin), refused as revoked; else another rotation of this very token
    went first, and this one is a replay. Always raises."""
    now_row = await uow.sessions.get(row.id)
    if now_row is None or now_row.revoked_at is not None:
        refused(ctx, uow, "refresh", factor=FACTOR, user_id=row.user_id, reason="revoked")
        raise InvalidToken()
    await _reused(ctx, uow, row.user_id, row.id)


async def _reused(ctx: FlowContext, uow: UnitOfWork, user_id: str, session_id: str) -> None:
    """A spent token presented again: the session ends (it may be the thief's or the owner's
    copy that came second, so neither keeps it), recorded and announced; always raises."""
    await end_session(ctx, uow, user_id, session_id, "refresh_token_reuse")
    reason = "reuse_detected_family_revoked"
    refused(ctx, uow, "refresh", factor=FACTOR, user_id=user_id, reason=reason)
    await uow.commit()
    await announce_revoked(ctx, user_id, "refresh_token_reuse", session_id)
    raise InvalidToken()


async def _refresh_row(ctx: FlowContext, token_hash: str) -> Session:
    """`refresh` for a token kept as a row of refresh_tokens (how sessions opened before
    migration 0009 hold theirs): spent the same way, and its session's next token is one of
    its row, so the session leaves the old table at its first refresh."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token_hash)
        if stored is None:
            raise InvalidToken()  # names no account: a log line at most (the door's)
        if stored.revoked_at is not None:
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="revoked")
            raise InvalidToken()
        if stored.used_at is not None or not await uow.refresh_tokens.mark_used(stored.id, now):
            await _reused(ctx, uow, stored.user_id, stored.family_id)
        if stored.expires_at <= now or stored.family_expires_at <= now:
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason="expired")
            raise InvalidToken()
        row = await uow.sessions.get(stored.family_id)
        moved = None if row is None else _next(ctx, row, stored.family_expires_at)
        if moved is None or not await uow.sessions.rotate(moved[1]):
            reason = "session_ended"
            refused(ctx, uow, "refresh", factor=FACTOR, user_id=stored.user_id, reason=reason)
            raise InvalidToken()
        session = await _touch(ctx, uow, stored.user_id, moved[0])
        await uow.commit()
    return session


async def _rotate_at_once(
    ctx: FlowContext, rotations: Rotations, presented: SessionRefresh, token_hash: str
) -> Session | None:
    """The path above when all is well, in one step where the database allows it (the same
    rows written: `ports.rotation`); None when anything is not, and then nothing was written."""
    now = ctx.clock()
    generation = presented.generation
    token, replacement_hash = new_session_refresh(
        ctx.secrets.token_key, presented.session_id, generation + 1
    )
    rotation = Rotation(
        session_id=presented.session_id,
        generation=generation,
        presented_hash=token_hash,
        now=now,
        replacement_hash=replacement_hash,
        replacement_expires_at=now + ctx.policy.refresh_ttl,
        record=audit_entry(ctx, "refresh", factor=FACTOR),
    )
    rotated = await rotations.rotate(rotation)
    if rotated is None:
        return None
    live, user = rotated
    audit("refresh", "success", factor=FACTOR, user_id=user.id)
    return session_of(ctx, user, live, token.plaintext, now)


async def logout(ctx: FlowContext, *, refresh_token: str, everywhere: bool = False) -> None:
    """Revoke the session the refresh token belongs to, or with `everywhere` every session of
    its user (the session's current token proves who asks; a spent one ends its own session
    only). Unknown tokens are silently accepted."""
    key = ctx.secrets.token_key
    presented = read_session_refresh(key, refresh_token)
    token_hash = hash_refresh_token(key, refresh_token)
    async with ctx.uow() as uow:
        if presented is not None:
            row = await uow.sessions.get(presented.session_id)
            if row is None or row.refresh_hash is None:
                return
            standing = _standing(presented, token_hash, row)
            if standing == UNISSUED:
                _unissued(ctx, uow, "logout", row)
                return  # the refusal's record stays; the unit rolls back the rest (nothing)
            user_id, session_id = row.user_id, row.id
            proves = standing == CURRENT and row.revoked_at is None
        else:
            stored = await uow.refresh_tokens.get_by_hash(token_hash)
            if stored is None:
                return
            user_id, session_id = stored.user_id, stored.family_id
            proves = stored.revoked_at is None
        if everywhere and proves:
            await revoke_all(ctx, uow, user_id, "logout_everywhere")
            record(ctx, uow, "logout_everywhere", factor=FACTOR, user_id=user_id)
            await uow.commit()
            await announce_revoked(ctx, user_id, "logout_everywhere")
            return
        revoked = await end_session(ctx, uow, user_id, session_id, "logout")
        record(ctx, uow, "logout", factor=FACTOR, user_id=user_id)
        await uow.commit()
    if revoked:
        await announce_revoked(ctx, user_id, "logout", session_id)
