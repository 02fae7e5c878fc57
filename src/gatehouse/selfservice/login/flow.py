"""Password sign-in: the credentials checked (same answer and timing for unknown accounts), then
a session opened."""

from __future__ import annotations

import logging
from datetime import datetime

from gatehouse.domain import events
from gatehouse.domain.sessions import clip_user_agent
from gatehouse.domain.throttle import FAILURE_WINDOW_SECONDS
from gatehouse.domain.users import User, normalize_email
from gatehouse.errors import InvalidCredentials, Unavailable
from gatehouse.ports.signin import Opened, SessionOpening, SessionOpenings
from gatehouse.selfservice.audit import audit, audit_entry, record, record_alone
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account, sign_in_throttle
from gatehouse.selfservice.login.second import FINISHING, MfaChallenge, challenge
from gatehouse.selfservice.notices import DEVICE_MEMORY, is_new_device, push_notice, write_notice
from gatehouse.selfservice.sessions.flow import Session, new_session, open_session, session_of

log = logging.getLogger(__name__)


async def login(
    ctx: FlowContext, *, email: str, password: str, user_agent: str | None = None
) -> Session | MfaChallenge:
    """A session, or for an account with a second factor (only once the password was right,
    so the answers tell no account from another before that) the challenge to finish it."""
    email = normalize_email(email)
    # `login_account`: here, not at the route, so that `verify-user` jobs from any producer
    # meet it too (DESIGN section 4).
    await limit_account(ctx, "login", email)
    # Failures are counted per email whether or not an account exists, so the growing waits
    # reveal nothing about which emails are registered.
    throttle_key, failures = await sign_in_throttle(ctx, email, "login", factor="password")
    async with ctx.reader() as uow:  # one read: no transaction around it
        user = await uow.users.get_by_email(email)
    if user is None or user.disabled_at is not None:
        # A disabled account is refused as an unknown one is: the same answer, the same work
        # (a hash burnt, a failure counted, the refusal recorded in a transaction of its own).
        await ctx.hasher.burn(password)  # same cost as a real check: no account enumeration
        raise await _refused(
            ctx, throttle_key, user, "unknown_account" if user is None else DISABLED
        )
    ok, needs_rehash = await ctx.hasher.verify(user.password_hash, password)
    now = ctx.clock()
    # A hash to renew is written by the ordinary path: the one statement never updates a user.
    if ok and not needs_rehash and ctx.sign_ins is not None:
        opened = await _open_at_once(ctx, ctx.sign_ins, user, user_agent, now)
        if isinstance(opened, Session):
            if failures:
                await _clear_after(ctx, throttle_key)
            return opened
        if opened in _REFUSALS:  # disabled, deleted or given a new password meanwhile
            raise await _refused(ctx, throttle_key, user, _REFUSALS[opened])
    if not ok:
        await ctx.failures.add(throttle_key, now.timestamp(), FAILURE_WINDOW_SECONDS)
    async with ctx.uow() as uow:
        if not ok:
            await uow.outbox.add(
                events.user_event(events.LOGIN_FAILED, user.id, {"factor": "password"}, now)
            )
            reason = "wrong_password"
            record(ctx, uow, "login", "failure", factor="password", user_id=user.id, reason=reason)
            await uow.commit()
            raise InvalidCredentials()
        # The account as it is now: the password was checked against the row read before the
        # hash, which an operator's disable or a password reset may have changed meanwhile.
        # Neither is undone by what follows (a renewed hash writes the whole row back).
        current = await uow.users.get(user.id)
        refusal = _refusal(user, current)
        if current is None or refusal is not None:
            raise await _refused(ctx, throttle_key, user, refusal or DISABLED)
        user = current
        if needs_rehash:
            user = user.with_changes(password_hash=await ctx.hasher.hash(password), updated_at=now)
            await uow.users.update(user)
        methods = await uow.factors.methods(user.id)
        if any(method in FINISHING for method in methods):
            # The failure count stays until the second factor is right too: a known password
            # must not buy a thief fresh tries at the code (second.finish clears it).
            outcome = "second_factor_required"
            record(ctx, uow, "login", outcome, factor="password", user_id=user.id)
            await uow.commit()  # the re-hash, if any
            return await challenge(ctx, user, methods)
        if failures:
            await ctx.failures.clear(throttle_key)
        # Before the session is added, which would make any device a known one.
        device = clip_user_agent(user_agent)
        new_device = await is_new_device(ctx, uow, user, device, now)
        if new_device:
            await write_notice(ctx, uow, user, "new_device", now, device=device or "unnamed")
        session = await open_session(
            ctx, uow, user, family_id=events.new_id(), user_agent=user_agent
        )
        await uow.outbox.add(
            events.user_event(events.LOGGED_IN, user.id, {"factor": "password"}, now)
        )
        record(ctx, uow, "login", factor="password", user_id=user.id)
        await uow.commit()
    if new_device:
        await push_notice(ctx, user.id, "new_device", now)
    return session


DISABLED, CHANGED = "disabled", "password_changed"  # the reasons recorded
_REFUSALS = {Opened.DISABLED: DISABLED, Opened.CHANGED: CHANGED}


def _refusal(read: User, current: User | None) -> str | None:
    """Why an account whose password was checked against `read` must now be refused, if so."""
    if current is None or current.disabled_at is not None:
        return DISABLED
    if current.password_hash != read.password_hash:
        return CHANGED
    return None


async def _refused(
    ctx: FlowContext, throttle_key: str, user: User | None, reason: str
) -> InvalidCredentials:
    """A refusal with the same answer as a wrong password: a failure counted, the refusal
    recorded in a transaction of its own (`reason`); the error to raise."""
    await ctx.failures.add(throttle_key, ctx.clock().timestamp(), FAILURE_WINDOW_SECONDS)
    user_id = None if user is None else user.id
    await record_alone(ctx, "login", factor="password", user_id=user_id, reason=reason)
    return InvalidCredentials()


async def _open_at_once(
    ctx: FlowContext,
    openings: SessionOpenings,
    user: User,
    user_agent: str | None,
    now: datetime,
) -> Session | Opened:
    """The plain outcome of `login` (a session, its event and record) in one step where the
    database allows it (`ports.signin`); else, nothing written, why not: the account disabled,
    deleted or given a new password since it was read, or another outcome due (a second
    factor, a new device: the ordinary path then works it out and writes it)."""
    session, refresh_token = new_session(ctx, user, now, events.new_id(), user_agent=user_agent)
    opening = SessionOpening(
        session=session,
        password_hash=user.password_hash,
        since=now - DEVICE_MEMORY,
        event=events.user_event(events.LOGGED_IN, user.id, {"factor": "password"}, now),
        record=audit_entry(ctx, "login", factor="password", user_id=user.id),
    )
    opened = await openings.open(opening)
    if opened is not Opened.OPENED:
        return opened
    audit("login", "success", factor="password", user_id=user.id)
    return session_of(ctx, user, session, refresh_token, now)


async def _clear_after(ctx: FlowContext, throttle_key: str) -> None:
    """The failure count cleared once the session is written. The ordinary path clears it
    inside its transaction, so a store that cannot be reached fails the sign-in there; here the
    sign-in is already written and answered, and a count left behind only slows the account's
    next wrong passwords down, as an unfinished count would."""
    try:
        await ctx.failures.clear(throttle_key)
    except Unavailable:
        log.warning("login: the failure count could not be cleared (its store is unavailable)")
