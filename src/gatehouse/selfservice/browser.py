"""The self-service pages' browser session (DESIGN 10): a cookie naming a Gatehouse session
(DESIGN 3a) under a MAC, checked against the database on every request, so whatever ends the
session (logout, revocation elsewhere, a password change or reset, deletion) ends the cookie's
at once; the CSRF tokens bound to it (before sign-in, to the browser's own random id); and the
sign-up ticket with which the verify page follows the code's delivery.

The cookie holds no token: each request mints a short access token of its session for the
flows (`issue_access`), which check it as they check an API client's."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.crypto import keyed_hash, same
from gatehouse.domain.deliveries import FINAL, Status
from gatehouse.domain.sessions import SessionRecord, is_alive
from gatehouse.domain.users import User
from gatehouse.errors import DecryptionError, InvalidToken, TokenError
from gatehouse.ports import DeliveryLog
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.sessions.flow import (
    Session,
    announce_revoked,
    end_session,
    issue_access,
    open_session,
    revoke_all,
)

# A page view marks its session used (the idle limit counts from there) at most this often.
TOUCH_EVERY = timedelta(minutes=1)
TICKET_CONTEXT = "ui-sign-up-ticket"
# With no mail queued (spent tries), the verify page shows what a prompt delivery shows, after
# this long: it must not tell that address apart from the others (DESIGN 9).
UNSENT_SHOWN_SENT_AFTER = timedelta(seconds=2)
_MAX_COOKIE = 512


# --- the session cookie --------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """A browser whose cookie names a live session: the session, its user, and an access token
    of the session minted for this request."""

    session: SessionRecord
    user: User
    token: str
    expires_in: int


def _session_mac(ctx: FlowContext, session_id: str) -> str:
    return keyed_hash(ctx.secrets.token_key, "ui-session", session_id)


def session_cookie(ctx: FlowContext, session_id: str) -> str:
    """The cookie's value for a session: its id and a MAC, which only this service can make."""
    return f"{session_id}.{_session_mac(ctx, session_id)}"


def session_id_of(ctx: FlowContext, cookie: str | None) -> str | None:
    """The session a cookie names, if its MAC is ours."""
    if not cookie or len(cookie) > _MAX_COOKIE:
        return None
    session_id, _, mac = cookie.rpartition(".")
    if not session_id or not same(mac, _session_mac(ctx, session_id)):
        return None
    return session_id


def cookie_for(ctx: FlowContext, session: Session) -> str:
    """The cookie of a session a sign-in just opened (named by its access token's `sid`)."""
    try:
        claims = ctx.tokens.verify(session.token, ctx.clock())
    except TokenError as exc:  # we signed it a moment ago
        raise InvalidToken() from exc
    return session_cookie(ctx, claims.sid)


async def signed_in(ctx: FlowContext, cookie: str | None) -> SignedIn | None:
    """The live session a cookie names, with an access token of it; None for no cookie, a
    forged one, or a session that ended (revoked, idle too long, too old, account gone)."""
    session_id = session_id_of(ctx, cookie)
    if session_id is None:
        return None
    now, policy = ctx.clock(), ctx.policy
    async with ctx.reader() as uow:
        record = await uow.sessions.get(session_id)
        if record is None or not is_alive(
            record, now, policy.refresh_ttl, policy.refresh_family_max
        ):
            return None
        user = await uow.users.get_signed_in(record.user_id, session_id)
    if user is None:
        return None
    if now - record.last_used_at >= TOUCH_EVERY:
        async with ctx.uow() as uow:
            touched = await uow.sessions.touch(session_id, now)
            if touched is None:  # revoked meanwhile
                return None
            await uow.commit()
        record, user = touched
    token, claims = issue_access(ctx, record, now)
    return SignedIn(record, user, token, int((claims.exp - now).total_seconds()))


async def sign_out(ctx: FlowContext, browser: SignedIn) -> None:
    """End the browser's session, as a logout does: its tokens, its sockets, its event."""
    session_id, user_id = browser.session.id, browser.user.id
    async with ctx.uow() as uow:
        revoked = await end_session(ctx, uow, user_id, session_id, "logout")
        record(ctx, uow, "logout", factor="cookie", user_id=user_id)
        await uow.commit()
    if revoked:
        await announce_revoked(ctx, user_id, "logout", session_id)


async def sign_out_everywhere(ctx: FlowContext, browser: SignedIn) -> None:
    """End every session of the browser's user, this one included."""
    user_id = browser.user.id
    async with ctx.uow() as uow:
        await revoke_all(ctx, uow, user_id, "logout_everywhere")
        record(ctx, uow, "logout_everywhere", factor="cookie", user_id=user_id)
        await uow.commit()
    await announce_revoked(ctx, user_id, "logout_everywhere")


async def open_after_sign_up(ctx: FlowContext, user_id: str, user_agent: str | None) -> str:
    """A session for an account this browser just signed up and verified (its ticket shows the
    browser gave the password; the code shows it reads the mail): the cookie's value."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        user = await uow.users.get(user_id)
        if user is None or user.disabled_at is not None:
            raise InvalidToken()
        session = await open_session(
            ctx, uow, user, family_id=events.new_id(), user_agent=user_agent
        )
        await uow.outbox.add(
            events.user_event(events.LOGGED_IN, user.id, {"factor": "password"}, now)
        )
        record(ctx, uow, "login", factor="sign_up", user_id=user_id)
        await uow.commit()
    return cookie_for(ctx, session)


# --- CSRF ------------------------------------------------------------------------------------


def new_browser_id() -> str:
    """A browser's own random id (its cookie): what CSRF tokens are bound to before sign-in."""
    return secrets.token_urlsafe(24)


def valid_browser_id(value: str | None) -> bool:
    return (
        bool(value)
        and len(value or "") <= 64
        and all(c.isalnum() or c in "-_" for c in value or "")
    )


def csrf_token(ctx: FlowContext, binding: str) -> str:
    """The CSRF token of a browser session (`s:<session id>`) or of a browser (`b:<its id>`)."""
    return keyed_hash(ctx.secrets.token_key, "ui-csrf", binding)


def csrf_ok(ctx: FlowContext, binding: str, token: str | None) -> bool:
    return bool(token) and same(token or "", csrf_token(ctx, binding))


# --- the sign-up ticket and the code's delivery ---------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """What the browser that signed up keeps (encrypted, in a cookie): the address, the mail
    queued for it (None: none was), the channel tried first, and when."""

    email: str
    message_id: str | None
    channel: str
    issued_at: datetime


def seal_ticket(
    ctx: FlowContext, email: str, message_id: str | None, channel: str = "email"
) -> str:
    body = {"e": email, "m": message_id, "c": channel, "t": ctx.clock().timestamp()}
    return ctx.keyring.encrypt(json.dumps(body, separators=(",", ":")), TICKET_CONTEXT)


def open_ticket(ctx: FlowContext, sealed: str | None) -> Ticket | None:
    """The ticket, unless it is missing, not ours, or older than a code lives."""
    if not sealed or len(sealed) > 2048:
        return None
    try:
        body = json.loads(ctx.keyring.decrypt(sealed, TICKET_CONTEXT))
        issued = datetime.fromtimestamp(float(body["t"]), ctx.clock().tzinfo)
        ticket = Ticket(str(body["e"]), body["m"], str(body["c"]), issued)
    except (DecryptionError, ValueError, KeyError, TypeError):
        return None
    if ticket.issued_at + ctx.policy.code_ttl <= ctx.clock():
        return None
    return ticket


async def delivery_progress(ctx: FlowContext, log: DeliveryLog, ticket: Ticket) -> dict[str, Any]:
    """Where the ticket's mail is, as the courier recorded it: `queued` (no courier on it yet),
    `sending`, `retrying` (a try failed), `sent`, or `failed` (abandoned); the channel that took
    it, and whether that is a fallback. No mail queued reads as a prompt delivery would."""
    channel: str | None
    if ticket.message_id is None:
        done = ctx.clock() >= ticket.issued_at + UNSENT_SHOWN_SENT_AFTER
        status, channel, attempts = ("sent" if done else "queued"), ticket.channel, 0
    else:
        record = await log.get(ticket.message_id)
        status, channel, attempts = _shown(record.status if record else None, record)
    return {
        "status": status,
        "first_channel": ticket.channel,
        "channel": channel or ticket.channel,
        "fallback": bool(channel) and channel != ticket.channel,
        "attempts": attempts,
        "final": status in ("sent", "failed"),
    }


def _shown(status: Status | None, record: Any) -> tuple[str, str | None, int]:
    if record is None or status is None or status is Status.QUEUED:
        return "queued", None, 0
    if status in FINAL:
        return ("sent" if status is Status.SENT else "failed"), record.channel, record.attempts
    retrying = bool(record.attempts) and record.last_error is not None
    return ("retrying" if retrying else "sending"), record.channel, record.attempts
