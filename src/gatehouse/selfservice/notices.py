"""Security notices (DESIGN 3a): the account's owner hears of every sensitive change, a password
reset and a sign-in from a new device, by mail to the account's (proven) address, written to the
outbox in the same transaction as the change, and by `security.notice` on its live sockets.

A stolen token or a guessed reset must not go unnoticed: the mail reaches the owner even when
the change also ended every session, and it tells only what happened and when, never a value
(no number, no password, nothing the person who made the change chose, apart from a device's
description, which the courier reduces to plain text)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from gatehouse.domain import events
from gatehouse.domain.users import User
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.context import FlowContext

log = logging.getLogger(__name__)

TEMPLATE = "security-notice"
# A notice is worth sending late (a courier that was down for hours), never lost.
NOTICE_TTL = timedelta(days=7)
# A user agent not seen on the account for this long is a new device (DESIGN 3a).
DEVICE_MEMORY = timedelta(days=90)

# The notice's kinds (its `type` on the socket) and the sentence the mail says for each: at
# most 64 characters, what the courier lets through of any variable.
WHAT = {
    "password_changed": "The password of your account was changed.",
    "password_reset": "The password of your account was reset with a recovery code.",
    "phone_changed": "A new phone number was confirmed on your account.",
    "phone_removed": "The phone number of your account was removed.",
    "email_changed": "The email address of your account was changed.",
    "account_deleted": "Your account was deleted.",
    "new_device": "Your account was signed in on a device new to it.",
    "mfa_enabled": "An authenticator app was added to your account.",
    "mfa_disabled": "The authenticator app of your account was removed.",
    "recovery_codes_replaced": "New recovery codes were made for your account.",
    "recovery_code_used": "A recovery code was used to sign in to your account.",
    "passkey_added": "A passkey was added to your account.",
    "passkey_removed": "A passkey was removed from your account.",
}


async def write_notice(
    ctx: FlowContext,
    uow: UnitOfWork,
    user: User,
    kind: str,
    now: datetime,
    *,
    device: str | None = None,
) -> None:
    """The notice mail for `user`, in the caller's transaction: it commits with the change or not
    at all. Keyed by the user id, so it stays in order with the user's other deliveries."""
    variables = {"what": WHAT[kind], "time": now.strftime("%Y-%m-%d %H:%M UTC")}
    if device is not None:
        variables["device"] = device
    await uow.outbox.add(
        events.delivery(
            key=user.id,
            channel="email",
            to=user.email,
            template=TEMPLATE if device is None else TEMPLATE + "-device",
            now=now,
            expires_at=now + NOTICE_TTL,
            variables=variables,
        )
    )


async def push_notice(ctx: FlowContext, user_id: str, kind: str, now: datetime) -> None:
    """`security.notice` to the user's live sockets, after the commit. Best effort: the mail is
    the durable notice; a missed push only means an open page learns of it later."""
    payload = {"type": kind, "time": now.isoformat()}
    try:
        await ctx.notifier.emit(f"user:{user_id}", "security.notice", payload)
    except Exception as exc:
        log.warning("could not push security.notice: %s", type(exc).__name__)


async def is_new_device(
    ctx: FlowContext, uow: UnitOfWork, user: User, user_agent: str | None, now: datetime
) -> bool:
    """Whether a sign-in with `user_agent` (already clipped as stored; None when the client sent
    none, itself a device of its own) comes from a device the account has not used in 90 days.
    The first sign-in of an account made in that time is not one: there is nothing to compare.
    storage/pg_signin.py writes the same rule in SQL (tests/integration/test_login_at_once.py
    holds the two to the same outcomes)."""
    since = now - DEVICE_MEMORY
    any_device, this_device = await uow.sessions.seen_since(user.id, user_agent, since)
    if not any_device:
        return user.created_at < since
    return not this_device
