"""A new phone number stays pending until proven (DESIGN 3a): a code goes to the new number, and
only that code, brought back by the same account, makes it the account's phone.

A stolen access token could otherwise point the account's SMS recovery at the thief's phone, or
someone's typo at a stranger's. Until the code comes back, the proven phone (or none) is the only
one recovery and every other flow see. A number another account holds is answered alike: nothing
is sent to it, and its verification fails as a wrong code does, so a change tells no one whose
number it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.codes import FAILURE_WINDOW_SECONDS, Purpose, generate_code
from gatehouse.domain.users import User, mask_phone, public_view
from gatehouse.errors import AccountExists, DecryptionError, InvalidCode, RateLimited
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import record
from gatehouse.selfservice.context import FlowContext, phone_of
from gatehouse.selfservice.limits import limit_account
from gatehouse.selfservice.notices import push_notice, write_notice
from gatehouse.selfservice.otp import Route, consume_then, limit_sends, send_code, store_code
from gatehouse.selfservice.sessions.flow import authenticate

PURPOSE = Purpose.PHONE
TEMPLATE = "verify-phone"
# Bound to this field and to its user (see `_context`): the pending ciphertext opens neither as
# an account's phone nor in another account's row.
PENDING_CONTEXT = "user.pending_phone"
# Nothing pending: what a verified number and a removed phone leave behind.
CLEARED: dict[str, Any] = {
    "pending_phone_ciphertext": None,
    "pending_phone_index": None,
    "pending_phone_expires_at": None,
}


@dataclass(frozen=True)
class Pending:
    """What a change of phone answers: the new number masked, and its code's lifetime."""

    masked: str
    expires_in: int


async def limit_change(ctx: FlowContext, user_id: str, phone: str) -> None:
    """The limits of one change, in the flow so every door meets them: `phone_change_account`
    per user, `otp_recipient` (one code a minute) and `otp_country` per number. Counted before
    anything is looked up, for a taken number as for a free one."""
    await limit_account(ctx, "phone_change", user_id)
    await limit_sends(ctx, "sms", phone)


async def propose(
    ctx: FlowContext, uow: UnitOfWork, user: User, phone: str, now: datetime
) -> tuple[dict[str, Any], Pending]:
    """`phone` pending on `user`: the row's new pending fields, and the code issued in the
    caller's transaction. The code is bound to this user and number, and replaces the user's
    earlier one: the code of a number asked for before no longer confirms anything."""
    index = ctx.blind_index("phone", phone)
    holder = await uow.users.get_by_phone_index(index)
    if holder is None or holder.id == user.id:
        await send_code(
            ctx,
            uow,
            purpose=PURPOSE,
            identifier=user.id,
            key=user.id,
            route=Route("sms", phone),  # the new number only: no fallback proves it
            template=TEMPLATE,
            binding=index,
        )
    else:
        await _store_unsent(ctx, user.id, index)
    fields = {
        "pending_phone_ciphertext": ctx.keyring.encrypt(phone, _context(user.id)),
        "pending_phone_index": index,
        "pending_phone_expires_at": now + ctx.policy.code_ttl,
    }
    return fields, Pending(mask_phone(phone), int(ctx.policy.code_ttl.total_seconds()))


async def _store_unsent(ctx: FlowContext, user_id: str, index: str) -> None:
    """For a number another account holds: a code stored as a sent one is, that no one ever
    reads. The earlier code dies as it would, and spent wrong tries refuse the change as they
    would (`send_code`'s 429), so no answer tells a taken number from a free one."""
    tries = await store_code(ctx, PURPOSE, user_id, generate_code(), index)
    if tries == 0:
        raise RateLimited(FAILURE_WINDOW_SECONDS, "Too many wrong codes; try again later")


def live_index(user: User, now: datetime) -> str | None:
    """The blind index of the user's pending number, unless none is pending or it expired."""
    expires = user.pending_phone_expires_at
    if user.pending_phone_index is None or expires is None or expires <= now:
        return None
    return user.pending_phone_index


async def verify(
    ctx: FlowContext, *, token: str, otp: str, job: str | None = None
) -> dict[str, Any]:
    """Make the pending number the account's phone with its code, the `phone_verified` event
    and the owner's notice in one transaction; answers the user's view (phone in full, as the
    profile shows it). No pending number, an expired one, a code of another number and a number
    taken meanwhile are all `InvalidCode`, and leave the account as it was.

    `job` names the queue job doing it: a worker killed after the check leaves the job to run
    again, and that run passes on the receipt the first left (see `otp.consume_then`)."""
    async with ctx.reader() as uow:
        user, _claims = await authenticate(ctx, uow, token)
    await limit_account(ctx, "phone_verify", user.id)  # in the flow: every door meets it
    # Without a live pending number, the proven one: only a job run again after its first run
    # committed can pass a check bound to it (the code is spent, the receipt remains).
    binding = live_index(user, ctx.clock()) or user.phone_index or ""

    async def confirm() -> dict[str, Any]:
        now = ctx.clock()
        async with ctx.uow() as uow:
            current, _claims = await authenticate(ctx, uow, token)  # still signed in
            index = live_index(current, now)
            if index is None and binding and current.phone_index == binding:
                return _view(ctx, current)  # this job's first run did it, then died
            phone = _opened(ctx, current) if index is not None and index == binding else None
            if phone is None or ctx.blind_index("phone", phone) != index:
                raise InvalidCode()
            holder = await uow.users.get_by_phone_index(index)
            if holder is not None and holder.id != current.id:
                raise InvalidCode()  # another account's number: as a wrong code, nothing written
            updated = current.with_changes(**ctx.phone_fields(phone), **CLEARED, updated_at=now)
            try:
                await uow.users.update(updated)
            except AccountExists:
                raise InvalidCode() from None  # taken by a change committed since the lookup
            await uow.outbox.add(events.user_event(events.PHONE_VERIFIED, current.id, {}, now))
            await write_notice(ctx, uow, updated, "phone_changed", now)
            record(ctx, uow, "phone.verify", factor="otp", user_id=current.id)
            await uow.commit()
        await push_notice(ctx, current.id, "phone_changed", now)
        return _view(ctx, updated)

    # The receipt of a job is bound to the number too: a run again after the user asked for
    # another number meanwhile finds another binding, so its receipt proves nothing.
    holder = f"{job}:{binding}" if job else None
    return await consume_then(
        ctx,
        purpose=PURPOSE,
        identifier=user.id,
        otp=otp,
        action=confirm,
        holder=holder,
        binding=binding,
        account=user.id,
    )


def _context(user_id: str) -> str:
    return f"{PENDING_CONTEXT}:{user_id}"


def _opened(ctx: FlowContext, user: User) -> str | None:
    """The pending number in clear; None if it cannot be opened (sealed under a data key since
    retired: `keys rotate-data` re-encrypts proven phones, and a pending one lives minutes)."""
    if user.pending_phone_ciphertext is None:
        return None
    try:
        return ctx.keyring.decrypt(user.pending_phone_ciphertext, _context(user.id))
    except DecryptionError:
        return None


def _view(ctx: FlowContext, user: User) -> dict[str, Any]:
    return public_view(user, phone_of(ctx, user))
