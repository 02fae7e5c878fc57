"""Sign-up: register (pending user + emailed code), verify the code (permanent user), resend,
and create-user (code from the verification service + details in one step, seed 004)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.codes import Purpose
from gatehouse.domain.users import (
    NAME_MAX,
    NO_PASSWORD,
    PendingRegistration,
    User,
    has_password,
    normalize_email,
)
from gatehouse.errors import Conflict, InvalidCode
from gatehouse.ports import UnitOfWork
from gatehouse.ports.signup import SignUpFinishes
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account
from gatehouse.selfservice.otp import Route, consume_then, limit_sends, send_code
from gatehouse.selfservice.registration.finish import (
    SignedUp,
    add_user,
    finish,
    finish_at_once,
    live_pending,
    signed_up,
)
from gatehouse.selfservice.timing import no_sooner_than
from gatehouse.selfservice.validation import require_name, require_password, require_phone

PURPOSE = Purpose.REGISTER


@dataclass(frozen=True)
class Accepted:
    """What register and resend answer, alike for every email; `message_id`: its mail, if any."""

    email: str
    expires_in: int
    message_id: str | None = field(default=None, compare=False)


async def register(
    ctx: FlowContext, *, name: str, email: str, password: str, phone: str | None = None
) -> Accepted:
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _register(ctx, name=name, email=email, password=password, phone=phone)


async def _register(
    ctx: FlowContext, *, name: str, email: str, password: str, phone: str | None
) -> Accepted:
    email = normalize_email(email)
    name = require_name(name)
    require_password(password, common=ctx.common_passwords)
    phone = require_phone(phone)
    await limit_sends(ctx, "email", email)
    # One read, then one argon2 operation whatever it found: a new or taken email's password
    # hashed, a live sign-up's own hash checked against it. Every path takes the same time.
    async with ctx.reader() as uow:
        taken = await uow.users.get_by_email(email) is not None
        checked = None if taken else await live_pending(ctx, uow, email)
    same = await _same_password(ctx, checked, password) if checked else False
    password_hash = "" if checked else await ctx.hasher.hash(password)
    now = ctx.clock()
    async with ctx.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            notice_id = await account_exists_notice(ctx, uow, email)
            await uow.commit()
            return _accepted(ctx, email, notice_id)
        live = await live_pending(ctx, uow, email)
        if live is not None:
            # Nobody has proven the address yet, so a second sign-up's word is worth no more
            # than the first's: with the same password it changes nothing; with another, the
            # sign-up is contested (see `_contested`). Either way the address gets a fresh
            # code for it (as resend-otp), which finishes only that one.
            if checked is None or checked.id != live.id:  # begun meanwhile: check against it
                same = await _same_password(ctx, live, password)
            if not same and has_password(live.password_hash):
                live = _contested(live)
                await uow.pending.put(live)
            message_id = await _send_code(ctx, uow, email, live)
            await uow.commit()
            return _accepted(ctx, email, message_id)
        password_hash = password_hash or await ctx.hasher.hash(password)  # ended meanwhile
        pending = PendingRegistration(
            # A new id, even over an expired one: codes bound to the old id stay dead.
            id=events.new_id(),
            email=email,
            name=name,
            password_hash=password_hash,
            created_at=now,
            expires_at=now + ctx.policy.pending_ttl,
            **ctx.phone_fields(phone),
        )
        await uow.pending.put(pending)
        message_id = await _send_code(ctx, uow, email, pending)
        await uow.outbox.add(
            events.user_event(events.REGISTERED, pending.id, {"email": email}, now)
        )
        await uow.commit()
    return _accepted(ctx, email, message_id)


async def _same_password(ctx: FlowContext, pending: PendingRegistration, password: str) -> bool:
    matches, _ = await ctx.hasher.verify(pending.password_hash, password)
    return matches


def _contested(pending: PendingRegistration) -> PendingRegistration:
    """A sign-up made twice with different passwords. Its code goes to the address's owner,
    but nothing tells which of the two that is: the account the code makes gets no password
    (the owner sets one through recovery, whose code only the owner reads), no phone (a
    recovery channel, perhaps anyone's) and for a name the address's own local part. Same id:
    the codes already sent still finish it."""
    return replace(
        pending,
        name=pending.email.partition("@")[0][:NAME_MAX],
        password_hash=NO_PASSWORD,
        phone_ciphertext=None,
        phone_index=None,
    )


async def account_exists_notice(ctx: FlowContext, uow: UnitOfWork, email: str) -> str:
    """No enumeration: the caller gets the usual answer; the owner learns of it by mail (its id)."""
    now = ctx.clock()
    message = events.delivery(
        key=_recipient_key(ctx, email),
        channel="email",
        to=email,
        template="account-exists",
        now=now,
        expires_at=now + ctx.policy.code_ttl,
    )
    await uow.outbox.add(message)
    return message.id


def _recipient_key(ctx: FlowContext, email: str) -> str:
    """The Kafka key (and the delivery events' subject) of mail to an address with no pending
    sign-up of its own: an HMAC of it, never the address, which would rest in Kafka and reach
    every consumer of `user-events` in plaintext."""
    return ctx.blind_index("recipient", email)


async def resend(ctx: FlowContext, *, email: str) -> Accepted:
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _resend(ctx, email=email)


async def _resend(ctx: FlowContext, *, email: str) -> Accepted:
    email = normalize_email(email)
    await limit_sends(ctx, "email", email)
    message_id = None
    async with ctx.uow() as uow:
        pending = await live_pending(ctx, uow, email)
        if pending is not None:
            message_id = await _send_code(ctx, uow, email, pending)
            await uow.commit()
    return _accepted(ctx, email, message_id)


async def send_signup_code(ctx: FlowContext, *, email: str) -> Accepted:
    """The verification service's sign-up code, before any details are given (seed 004)."""
    async with no_sooner_than(ctx.policy.answer_floor):
        return await _send_signup_code(ctx, email=email)


async def _send_signup_code(ctx: FlowContext, *, email: str) -> Accepted:
    email = normalize_email(email)
    await limit_sends(ctx, "email", email)
    async with ctx.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            await account_exists_notice(ctx, uow, email)
        else:
            # With a live sign-up, its code (bound to it); else one bound to the address alone.
            await _send_code(ctx, uow, email, await live_pending(ctx, uow, email))
        await uow.commit()
    return _accepted(ctx, email)


async def verify(ctx: FlowContext, *, email: str, otp: str) -> dict[str, Any]:
    """`verify_sign_up`, answering the new user's view."""
    return (await verify_sign_up(ctx, email=email, otp=otp)).user


async def verify_sign_up(ctx: FlowContext, *, email: str, otp: str) -> SignedUp:
    """Turn the pending registration into a user if the code is right (a contested one into a
    user without a password)."""
    email = normalize_email(email)
    # `verify_account` in the flow: `verify-otp` and `create-user` jobs share one counter.
    await limit_account(ctx, "verify", email)

    if ctx.sign_ups is not None:
        return await _verify_at_once(ctx, ctx.sign_ups, email, otp)
    # One transaction: the code is checked against the live sign-up read in it, bound to its id,
    # so a code issued for another (an earlier one, or none) cannot finish this one.
    async with ctx.uow() as uow:
        pending = await live_pending(ctx, uow, email)

        async def create() -> SignedUp:
            if pending is None:
                raise InvalidCode()
            return await finish(ctx, uow, pending)

        binding = pending.id if pending else ""
        return await consume_then(
            ctx, purpose=PURPOSE, identifier=email, otp=otp, action=create, binding=binding
        )


async def _verify_at_once(
    ctx: FlowContext, finishes: SignUpFinishes, email: str, otp: str
) -> SignedUp:
    """The same, its writes in one step (`finish_at_once`): the sign-up the code was bound to
    removed and made the user at once. If that finds it no longer there and live, the code was
    for a sign-up that ended meanwhile (finished by another door, or expired): refused, as a
    code bound to no live sign-up is.

    Which sign-up, the code store says (`CodeStore.binding`), not a read of it (a fifth of the
    api's CPU a verify); the HMAC covers the binding, so a wrong one fails the check. No code
    reads nothing either, so the timing does not tell an address whose register found an
    account from one with a sign-up waiting; only a code an earlier release stored is read for.
    Unlike the ordinary path, the right code of an expired sign-up is spent here rather than
    counted as a wrong try: both refuse it (400) and write nothing."""
    subject = ctx.code_subject(PURPOSE, email)
    binding = await ctx.codes.binding(PURPOSE, subject)
    if binding is None:
        async with ctx.reader() as reader:
            pending = await live_pending(ctx, reader, email)
        binding = pending.id if pending else ""

    async def create() -> SignedUp:
        user = await finish_at_once(ctx, finishes, binding, email) if binding else None
        if user is None:
            raise InvalidCode()
        return signed_up(ctx, user)

    return await consume_then(
        ctx, purpose=PURPOSE, identifier=email, otp=otp, action=create, binding=binding
    )


async def create_user(
    ctx: FlowContext,
    *,
    email: str,
    otp: str,
    password: str,
    name: str,
    phone: str | None = None,
    job: str | None = None,
) -> dict[str, Any]:
    """`create_account`, answering the new user's view."""
    signed_up = await create_account(
        ctx, email=email, otp=otp, password=password, name=name, phone=phone, job=job
    )
    return signed_up.user


async def create_account(
    ctx: FlowContext,
    *,
    email: str,
    otp: str,
    password: str,
    name: str,
    phone: str | None = None,
    job: str | None = None,
) -> SignedUp:
    """Create a verified user from a sign-up code and the details, in one step.

    `job` names the queue job doing it. A worker killed after the code check leaves the job to
    run again, with its code spent; that run passes the check on the receipt the first one left
    (see `otp.consume_then`). If the first run had committed, the second finds the user and
    answers with it instead of a conflict: the job succeeds and the user exists once.

    With a live pending registration, the code is bound to it (as verify-otp's) and the job
    finishes that sign-up: its password must be the one given at sign-up, so a job with another
    cannot turn someone's code into an account with a password of the job's choosing. A
    contested sign-up (see `_contested`) has none to match: its account gets no password."""
    email = normalize_email(email)
    # The `verify-otp` route's `verify_account`, met by every producer of `create-user` jobs.
    await limit_account(ctx, "verify", email)
    name = require_name(name)
    require_password(password, common=ctx.common_passwords)
    phone = require_phone(phone)
    async with ctx.reader() as uow:
        bound_to = await live_pending(ctx, uow, email)
    binding = bound_to.id if bound_to else ""
    stored_phone = ctx.phone_fields(phone)
    details = (name, stored_phone["phone_index"])

    async def create() -> SignedUp:
        password_hash = await _signup_password(ctx, bound_to, password)
        now = ctx.clock()
        async with ctx.uow() as uow:
            existing = await uow.users.get_by_email(email)
            if existing is not None:
                if job is not None and await _made_by_this_sign_up(
                    ctx, existing, password, details
                ):
                    return signed_up(ctx, existing)
                raise Conflict("An account with this email already exists")
            pending = await live_pending(ctx, uow, email)
            if (pending.id if pending else "") != binding:
                raise InvalidCode()  # the sign-up the code was bound to ended meanwhile
            if pending is not None and not has_password(pending.password_hash):
                password_hash = NO_PASSWORD  # contested meanwhile
            user = User(
                id=pending.id if pending else events.new_id(),
                email=email,
                name=name,
                password_hash=password_hash,
                created_at=now,
                updated_at=now,
                **stored_phone,
                email_verified_at=now,
            )
            if pending is not None:
                await uow.pending.delete(pending.id)
            else:
                await uow.outbox.add(
                    events.user_event(events.REGISTERED, user.id, {"email": email}, now)
                )
            await add_user(ctx, uow, user)
            await uow.commit()
        return signed_up(ctx, user)

    return await consume_then(
        ctx, purpose=PURPOSE, identifier=email, otp=otp, action=create, holder=job, binding=binding
    )


async def _signup_password(
    ctx: FlowContext, pending: PendingRegistration | None, password: str
) -> str:
    """The new account's hash: the pending sign-up's if `password` is its own (none if it was
    contested), a new one without a pending sign-up."""
    # One verify costs what one hash does (against `NO_PASSWORD` too): a job's time does not
    # tell whether a sign-up waits, or was contested.
    if pending is None:
        return await ctx.hasher.hash(password)
    matches, _ = await ctx.hasher.verify(pending.password_hash, password)
    if not has_password(pending.password_hash):
        return NO_PASSWORD
    if not matches:
        raise InvalidCode()
    return pending.password_hash


async def _made_by_this_sign_up(
    ctx: FlowContext, user: User, password: str, details: tuple[str, str | None]
) -> bool:
    """A job run again after its worker died: the code check passed on the receipt this job
    left, so the code is this sign-up's, and the verified account with this email and this
    very password is the one its first run committed (anyone else's would not match). A
    contested sign-up's account has no password to match: the job's name and phone do."""
    if user.email_verified_at is None:
        return False
    matches, _ = await ctx.hasher.verify(user.password_hash, password)
    if has_password(user.password_hash):
        return matches
    return (user.name, user.phone_index) == details


async def _send_code(
    ctx: FlowContext, uow: UnitOfWork, email: str, pending: PendingRegistration | None
) -> str | None:
    """A sign-up code, bound to `pending` (keyed by its id) or to the address alone: its mail."""
    # No name in the mail: the address is not proven yet, and a name is anyone's text (DESIGN
    # section 9). Quiet: spent wrong tries send nothing, answered as if sent, so a lockout tells
    # an address with a sign-up from one with an account or with nothing.
    message_id = events.new_id()
    sent = await send_code(
        ctx,
        uow,
        purpose=PURPOSE,
        identifier=email,
        key=pending.id if pending else _recipient_key(ctx, email),
        route=Route("email", email),
        template="verify-email",
        binding=pending.id if pending else "",
        quiet=True,
        message_id=message_id,
    )
    return message_id if sent else None


def _accepted(ctx: FlowContext, email: str, message_id: str | None = None) -> Accepted:
    return Accepted(email, int(ctx.policy.code_ttl.total_seconds()), message_id)
