"""Issuing, delivering and checking one-time codes, shared by sign-up, recovery and verification."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gatehouse.domain import events
from gatehouse.domain.codes import FAILURE_WINDOW_SECONDS, CodeCheck, generate_code, looks_like_code
from gatehouse.domain.crypto import keyed_hash
from gatehouse.domain.throttle import country_prefix
from gatehouse.domain.users import User, mask_phone
from gatehouse.errors import GatehouseError, InvalidCode, RateLimited, Unavailable
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import audit, record_alone
from gatehouse.selfservice.context import FlowContext, phone_of

PHONE_CHANNELS = ("sms", "whatsapp")
T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """Where a code goes: a channel and its address, then fallbacks tried in order."""

    channel: str
    address: str
    fallbacks: list[tuple[str, str]] = field(default_factory=list)


def route_for(user: User, ctx: FlowContext, channel: str) -> Route | None:
    """The chosen channel first, then WhatsApp → SMS → email among what the user has."""
    phone = phone_of(ctx, user)
    available = {"email": user.email}
    if phone:
        available.update(sms=phone, whatsapp=phone)
    if channel not in available:
        return None
    order = [c for c in ("whatsapp", "sms", "email") if c in available and c != channel]
    return Route(channel, available[channel], [(c, available[c]) for c in order])


async def send_code(
    ctx: FlowContext,
    uow: UnitOfWork,
    *,
    purpose: str,
    identifier: str,
    key: str,
    route: Route,
    template: str,
    variables: dict[str, str] | None = None,
    binding: str = "",
    quiet: bool = False,
    message_id: str | None = None,
) -> bool:
    """Store the code's HMAC and queue its delivery in the caller's transaction. The plaintext
    code, and any phone number, leave this function only encrypted for the courier.

    `binding` ties the code to what it was issued for (a pending registration's id): only a
    check with the same binding accepts it. When the recipient's wrong tries are spent, nothing
    is sent: with `quiet` the caller learns it from the False returned, else from `RateLimited`
    (doors that must not tell known from unknown accounts answer as if a code went out).
    `message_id` names the delivery (new when not given), so a caller can follow it."""
    now = ctx.clock()
    code = generate_code()
    ttl = int(ctx.policy.code_ttl.total_seconds())
    tries = await store_code(ctx, purpose, identifier, code, binding)
    if tries == 0:  # every try of the window was spent on wrong codes: a new one would not help
        if quiet:
            return False
        raise RateLimited(FAILURE_WINDOW_SECONDS, "Too many wrong codes; try again later")
    message_id = message_id or events.new_id()

    def address(channel: str, value: str) -> tuple[str, str | None]:
        if channel in PHONE_CHANNELS:
            sealed = ctx.keyring.encrypt(value, events.recipient_context(message_id))
            return mask_phone(value), sealed
        return value, None

    to, to_ciphertext = address(route.channel, route.address)
    fallbacks: list[dict[str, str | None]] = []
    for channel, value in route.fallbacks:
        shown, sealed = address(channel, value)
        fallbacks.append({"channel": channel, "to": shown, "to_ciphertext": sealed})
    await uow.outbox.add(
        events.delivery(
            message_id=message_id,
            key=key,
            channel=route.channel,
            to=to,
            to_ciphertext=to_ciphertext,
            template=template,
            now=now,
            expires_at=now + ctx.policy.code_ttl,
            code_ciphertext=ctx.keyring.encrypt(code, events.code_context(message_id)),
            variables={"minutes": str(ttl // 60), **(variables or {})},
            fallbacks=fallbacks,
        )
    )
    return True


async def store_code(
    ctx: FlowContext, purpose: str, identifier: str, code: str, binding: str = ""
) -> int:
    """Put `code` in the code store, bound to `binding`, with the policy's lifetime and tries:
    its HMAC and the binding it covers always go in together (`CodeStore.binding`). The tries
    it has, 0 when none are left (nothing stored)."""
    return await ctx.codes.put(
        purpose,
        ctx.code_subject(purpose, identifier),
        bound_code_hash(ctx, purpose, identifier, code, binding),
        int(ctx.policy.code_ttl.total_seconds()),
        ctx.policy.code_attempts,
        binding,
    )


def bound_code_hash(
    ctx: FlowContext, purpose: str, identifier: str, code: str, binding: str
) -> str:
    """The stored HMAC; a bound code's also covers its binding (one more part: never equal)."""
    if not binding:
        return ctx.code_hash(purpose, identifier, code)
    return keyed_hash(ctx.secrets.code_key, purpose, identifier, code, binding)


async def limit_sends(ctx: FlowContext, channel: str, address: str) -> None:
    """At most one code per recipient a minute and a bounded number an hour (rule
    `otp_recipient`), and SMS/WhatsApp sends per destination country (`otp_country`) against
    SMS pumping. Callers apply it to the address they were given, before looking anything up,
    so known and unknown accounts are limited alike and a 429 reveals nothing."""
    recipient = ctx.blind_index("otp-recipient", address)
    wait = await ctx.limiter.hit("otp_recipient", recipient)
    if not wait and channel in PHONE_CHANNELS:
        wait = await ctx.limiter.hit("otp_country", country_prefix(address))
    if wait:
        raise RateLimited(wait, "A code was sent recently; wait before asking for another")


async def consume_then(
    ctx: FlowContext,
    *,
    purpose: str,
    identifier: str,
    otp: str,
    action: Callable[[], Awaitable[T]],
    holder: str | None = None,
    binding: str = "",
    account: str | None = None,
) -> T:
    """Check and consume the code, then run `action`. If the action fails for an infrastructure
    reason the code is put back, so the person can simply retry once we recover.

    `holder` names a job (queue and id). A job whose worker is killed after the check is run
    again by the queue; the code is spent by then, so the check leaves a receipt bound to the
    code and the holder, and the same holder presenting the same code passes again (and only
    it: the receipt is an HMAC under the code key). The action must then be idempotent.

    `account`: the user the code is for, when there is one (a reset, a new phone): a wrong
    code is then an audit record of that account, not only a log line.

    `binding` is what the code must have been issued for (see `send_code`). The receipt leaves
    it out: the first run checked it, and a run again may find the bound row gone, committed."""
    otp = otp.strip()
    if not looks_like_code(otp):
        raise InvalidCode()
    subject = ctx.code_subject(purpose, identifier)
    code_hash = bound_code_hash(ctx, purpose, identifier, otp, binding)
    receipt = ctx.code_receipt(purpose, identifier, otp, holder) if holder else None
    result = await ctx.codes.check(
        purpose,
        subject,
        code_hash,
        receipt=receipt,
        receipt_ttl_seconds=int(ctx.policy.code_ttl.total_seconds()),
    )
    if result is not CodeCheck.OK:
        if account is None:
            audit(f"code.{purpose}", "failure", factor="otp", reason=result.value)
        else:
            name, why = f"code.{purpose}", result.value
            await record_alone(ctx, name, factor="otp", user_id=account, reason=why)
        raise InvalidCode()
    audit(f"code.{purpose}", "success", factor="otp")
    try:
        return await action()
    except GatehouseError as exc:
        if isinstance(exc, Unavailable):
            await _restore(ctx, purpose, subject, code_hash, binding)
        raise
    except Exception:
        await _restore(ctx, purpose, subject, code_hash, binding)
        raise


async def _restore(
    ctx: FlowContext, purpose: str, subject: str, code_hash: str, binding: str
) -> None:
    ttl = int(ctx.policy.code_ttl.total_seconds())
    attempts = ctx.policy.code_attempts
    await ctx.codes.restore(purpose, subject, code_hash, ttl, attempts, binding)
