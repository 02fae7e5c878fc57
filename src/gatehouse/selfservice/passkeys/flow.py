"""Passkeys (DESIGN 3b): register one (options, then the authenticator's answer), list and
remove them, and sign in with one, with no password (a discoverable credential names its
account) or as the second step of a password sign-in or a reauth (`assertion_options` and
`verify_assertion`, bound to the account).

A ceremony's flow is single use and lives 5 minutes on every api node, yet nothing of it is
stored but its liveness: the challenge is an HMAC of the flow (its kind, its id, the account it
is bound to) under the code key, so any node recomputes it, and the code store holds one entry
per flow with one try, which the first answer spends whatever it is worth. A flow id says
whether the flow is bound to an account (`a.`) or open to any (`o.`, a passwordless sign-in):
the id is part of the HMAC, so changing it only kills the flow."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any, NoReturn

from gatehouse.domain import events
from gatehouse.domain.codes import CodeCheck
from gatehouse.domain.crypto import keyed_hash
from gatehouse.domain.factors import AAL2, HWK, USER, Passkey
from gatehouse.domain.sessions import clip_user_agent
from gatehouse.domain.users import User, clean_name
from gatehouse.errors import Conflict, InvalidCode, InvalidCredentials, InvalidInput, NotFound
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.audit import audit, record, record_alone, refused
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import limit_account
from gatehouse.selfservice.mfa.codes import drop_if_no_factor, has_factor, store_new_codes
from gatehouse.selfservice.notices import is_new_device, push_notice, write_notice
from gatehouse.selfservice.passkeys.terms import TIMEOUT_MS, Refused
from gatehouse.selfservice.sessions.flow import Session, authenticate, open_session
from gatehouse.selfservice.sessions.manage import require_recent

PURPOSE = "webauthn"  # the code store's purpose for live flows
FLOW_SECONDS = TIMEOUT_MS // 1000
# The functions that run a ceremony import `ceremony` (py_webauthn) themselves: the first one a
# process runs loads it, not every api process at start (`terms.py`).


REGISTER, SIGN_IN = "register", "sign-in"
BOUND, OPEN = "a.", "o."  # a flow id's prefix: bound to one account, or open to any
NAME_MAX = 64
DEFAULT_NAME = "Passkey"
# Enough for every device a person owns, with room to spare; bounds the options' size.
MAX_PASSKEYS = 20
REFUSED = "The passkey was not accepted"
ADDED, REMOVED = "passkey_added", "passkey_removed"  # notice kinds (selfservice/notices.py)


# --- flows ---------------------------------------------------------------------------------


def _challenge(ctx: FlowContext, kind: str, flow_id: str, user_id: str | None) -> bytes:
    return bytes.fromhex(keyed_hash(ctx.secrets.code_key, PURPOSE, kind, flow_id, user_id or ""))


def _seal(ctx: FlowContext, kind: str, flow_id: str, user_id: str | None) -> str:
    """What the code store holds for a live flow: only this service can make it."""
    return keyed_hash(ctx.secrets.code_key, "webauthn-flow", kind, flow_id, user_id or "")


async def _start(ctx: FlowContext, kind: str, user_id: str | None) -> tuple[str, bytes]:
    """A new flow (bound to `user_id` when given): its id and its challenge."""
    flow_id = (BOUND if user_id else OPEN) + secrets.token_urlsafe(24)
    subject = ctx.code_subject(PURPOSE, flow_id)
    seal = _seal(ctx, kind, flow_id, user_id)
    await ctx.codes.put(PURPOSE, subject, seal, ttl_seconds=FLOW_SECONDS, attempts=1)
    return flow_id, _challenge(ctx, kind, flow_id, user_id)


async def _spend(ctx: FlowContext, kind: str, flow_id: str, user_id: str | None) -> bytes | None:
    """The challenge of a live flow of `kind`, spent now; None if there is no such flow. A flow
    bound to an account is only ever spent for it; an open one for whoever its passkey names."""
    bound_to = user_id if flow_id.startswith(BOUND) else None
    if flow_id.startswith(BOUND) and not user_id:
        return None
    subject = ctx.code_subject(PURPOSE, flow_id)
    found = await ctx.codes.check(PURPOSE, subject, _seal(ctx, kind, flow_id, bound_to))
    return _challenge(ctx, kind, flow_id, bound_to) if found is CodeCheck.OK else None


# --- registration, list, removal -----------------------------------------------------------


def passkey_view(passkey: Passkey) -> dict[str, Any]:
    """A passkey as its owner sees it: never its key, counter or credential id."""
    return {
        "id": passkey.id,
        "name": passkey.name,
        "created_at": passkey.created_at.isoformat(),
        "last_used_at": None if passkey.last_used_at is None else passkey.last_used_at.isoformat(),
    }


def _label(name: str | None) -> str:
    if name is None or not name.strip():
        return DEFAULT_NAME
    cleaned = clean_name(name)
    if cleaned is None or len(cleaned) > NAME_MAX:
        message = f"Name must be 1 to {NAME_MAX} printable characters"
        raise InvalidInput(message, errors=[{"field": "name", "message": message}])
    return cleaned


async def registration_options(ctx: FlowContext, *, token: str) -> dict[str, Any]:
    """`{flow_id, options}` to create a passkey for the token's account; recent auth needed
    (a stolen access token alone must not plant a key of its own on the account)."""
    from gatehouse.selfservice.passkeys import ceremony

    async with ctx.reader() as uow:
        user, claims = await authenticate(ctx, uow, token)
        existing = await uow.factors.passkeys(user.id)
    require_recent(ctx, claims, user.id, "passkey.add")
    await limit_account(ctx, "passkey_register", user.id)
    if len(existing) >= MAX_PASSKEYS:
        raise Conflict(f"An account holds at most {MAX_PASSKEYS} passkeys: remove one first")
    flow_id, challenge = await _start(ctx, REGISTER, user.id)
    options = ceremony.creation_options(
        ctx.relying_party,
        challenge=challenge,
        user_id=user.id,
        user_name=user.email,
        display_name=user.name,
        existing=existing,
    )
    return {"flow_id": flow_id, "options": options}


async def register(
    ctx: FlowContext, *, token: str, flow_id: str, credential: dict[str, Any], name: str | None
) -> tuple[dict[str, Any], list[str] | None]:
    """Verify the authenticator's answer to the flow's options and keep the new passkey, with
    its event and the owner's notice in the same transaction. Returns the passkey as its owner
    sees it and, when it is the account's first second factor, its new recovery codes."""
    from gatehouse.selfservice.passkeys import ceremony

    label = _label(name)
    async with ctx.reader() as uow:
        user, _claims = await authenticate(ctx, uow, token)
    await limit_account(ctx, "passkey_register", user.id)
    challenge = await _spend(ctx, REGISTER, flow_id, user.id)
    try:
        if challenge is None:
            raise Refused("no such flow")
        new = ceremony.verify_creation(ctx.relying_party, credential, challenge=challenge)
    except Refused as exc:
        audit("passkey.add", "failure", factor="passkey", user_id=user.id, reason=str(exc))
        raise InvalidCode(REFUSED + ", or its request expired: start again") from None
    now = ctx.clock()
    passkey = Passkey(
        id=events.new_id(),
        user_id=user.id,
        credential_id=new.credential_id,
        public_key=new.public_key,
        sign_count=new.sign_count,
        name=label,
        created_at=now,
        transports=new.transports,
    )
    async with ctx.uow() as uow:
        user, _claims = await authenticate(ctx, uow, token)  # still signed in, now
        if await uow.factors.passkey_by_credential(new.credential_id) is not None:
            audit("passkey.add", "failure", factor="passkey", user_id=user.id, reason="known")
            raise Conflict("This passkey is already registered")
        if len(await uow.factors.passkeys(user.id)) >= MAX_PASSKEYS:
            raise Conflict(f"An account holds at most {MAX_PASSKEYS} passkeys: remove one first")
        # The first second factor of the account comes with its recovery codes (DESIGN 3b).
        codes: list[str] | None = None if await has_factor(uow, user.id) else []
        await uow.factors.add_passkey(passkey)
        if codes is not None:
            codes = await store_new_codes(ctx, uow, user.id, now)
        await uow.outbox.add(
            events.user_event(events.PASSKEY_ADDED, user.id, {"passkey_id": passkey.id}, now)
        )
        await write_notice(ctx, uow, user, ADDED, now)
        record(ctx, uow, "passkey.add", factor="access_token", user_id=user.id)
        await uow.commit()
    await push_notice(ctx, user.id, ADDED, now)
    return passkey_view(passkey), codes


async def list_passkeys(ctx: FlowContext, *, token: str) -> list[dict[str, Any]]:
    """The account's passkeys, oldest first."""
    async with ctx.reader() as uow:
        user, _claims = await authenticate(ctx, uow, token)
        found = await uow.factors.passkeys(user.id)
    return [passkey_view(p) for p in found]


async def remove(ctx: FlowContext, *, token: str, passkey_id: str) -> str:
    """Remove one of the account's passkeys (recent auth needed). Someone else's and an
    unknown one are the same 404. Returns the user id."""
    now = ctx.clock()
    async with ctx.uow() as uow:
        user, claims = await authenticate(ctx, uow, token)
        require_recent(ctx, claims, user.id, "passkey.remove")
        if not await uow.factors.remove_passkey(user.id, passkey_id):
            audit("passkey.remove", "failure", factor="passkey", user_id=user.id)
            raise NotFound("No such passkey")
        await drop_if_no_factor(uow, user.id, now)
        await uow.outbox.add(
            events.user_event(events.PASSKEY_REMOVED, user.id, {"passkey_id": passkey_id}, now)
        )
        await write_notice(ctx, uow, user, REMOVED, now)
        record(ctx, uow, "passkey.remove", factor="access_token", user_id=user.id)
        await uow.commit()
    await push_notice(ctx, user.id, REMOVED, now)
    return user.id


# --- sign-in -------------------------------------------------------------------------------


async def assertion_options(ctx: FlowContext, *, user_id: str | None) -> dict[str, Any]:
    """`{flow_id, options}` of a sign-in. Without `user_id` (passwordless) the authenticator
    picks the account; with one (a second step, a reauth) the flow is bound to that account
    and `allowCredentials` lists its passkeys: NotFound when it has none."""
    from gatehouse.selfservice.passkeys import ceremony

    allowed = None
    if user_id is not None:
        async with ctx.reader() as uow:
            allowed = await uow.factors.passkeys(user_id)
        if not allowed:
            raise NotFound("This account has no passkey")
    flow_id, challenge = await _start(ctx, SIGN_IN, user_id)
    options = ceremony.request_options(ctx.relying_party, challenge=challenge, allowed=allowed)
    return {"flow_id": flow_id, "options": options}


async def _refuse(
    ctx: FlowContext,
    action: str,
    reason: str,
    user_id: str | None = None,
    uow: UnitOfWork | None = None,
) -> NoReturn:
    # One answer for every reason (unknown credential, bad signature, spent flow): a client
    # learns nothing about which passkeys exist. The reason goes to the audit trail only (a
    # record when the refusal names an account, in `uow` when one is open; else a log line).
    if user_id is None:
        audit(action, "failure", factor="passkey", reason=reason)
    elif uow is not None:
        refused(ctx, uow, action, factor="passkey", user_id=user_id, reason=reason)
    else:
        await record_alone(ctx, action, factor="passkey", user_id=user_id, reason=reason)
    raise InvalidCredentials(REFUSED)


async def _prove(
    ctx: FlowContext, flow_id: str, credential: dict[str, Any], user_id: str | None, action: str
) -> tuple[Passkey, int]:
    """The passkey an assertion was made with and its new counter, if everything about it is
    right: a live flow (spent now), a passkey we know (of `user_id`, when given), the user
    handle it claims, and py_webauthn's checks. Nothing is written."""
    from gatehouse.selfservice.passkeys import ceremony

    challenge = await _spend(ctx, SIGN_IN, flow_id, user_id)
    if challenge is None:
        await _refuse(ctx, action, "no_such_flow", user_id)
    try:
        credential_id = ceremony.credential_id_of(credential)
        handle = ceremony.user_handle_of(credential)
    except Refused as exc:
        await _refuse(ctx, action, str(exc), user_id)
    async with ctx.reader() as uow:
        passkey = await uow.factors.passkey_by_credential(credential_id)
    if passkey is None:
        await _refuse(ctx, action, "unknown_credential", user_id)
    if user_id is not None and passkey.user_id != user_id:
        await _refuse(ctx, action, "passkey_of_another_account", user_id)
    if handle is not None and handle != ceremony.user_handle(passkey.user_id):
        await _refuse(ctx, action, "user_handle_mismatch", passkey.user_id)
    await limit_account(ctx, "passkey_login", passkey.user_id)
    try:
        count = ceremony.verify_assertion(
            ctx.relying_party, credential, challenge=challenge, passkey=passkey
        )
    except Refused as exc:
        await _refuse(ctx, action, str(exc), passkey.user_id)
    return passkey, count


async def _record_use(
    ctx: FlowContext, uow: UnitOfWork, passkey: Passkey, count: int, action: str
) -> tuple[User, Passkey]:
    """The use written (counter and time), in the caller's transaction. A counter that did not
    go forward since the check means another use won the race, or a cloned authenticator."""
    now = ctx.clock()
    if not await uow.factors.use_passkey(passkey.id, count, now):
        await _refuse(ctx, action, "sign_count_not_forward", passkey.user_id, uow)
    user = await uow.users.get(passkey.user_id)
    if user is None:  # the account was deleted meanwhile
        await _refuse(ctx, action, "no_account")
    if user.disabled_at is not None:  # refused as any other passkey is: one answer
        await _refuse(ctx, action, "disabled", user.id, uow)
    return user, replace(passkey, sign_count=count, last_used_at=now)


async def verify_assertion(
    ctx: FlowContext,
    *,
    flow_id: str,
    credential: dict[str, Any],
    user_id: str | None,
    action: str = "login",
) -> tuple[User, Passkey]:
    """Check a passkey assertion (`AuthenticationResponseJSON`) of a flow from
    `assertion_options`, and record the use (counter, time) in a transaction of its own.
    With `user_id`, only that account's passkeys are accepted (a flow bound to another account
    never is). Returns the account and its passkey as now stored; `InvalidCredentials` for
    anything wrong, whatever it was. `action` names the audit lines."""
    passkey, count = await _prove(ctx, flow_id, credential, user_id, action)
    async with ctx.uow() as uow:
        user, used = await _record_use(ctx, uow, passkey, count, action)
        await uow.commit()
    audit(action, "success", factor="passkey", user_id=user.id)  # the caller records it
    return user, used


async def sign_in(
    ctx: FlowContext, *, flow_id: str, credential: dict[str, Any], user_agent: str | None = None
) -> Session:
    """Passwordless sign-in: a discoverable passkey names its account and proves two factors
    at once (the device, and the PIN or biometric that unlocked it), so the session is
    `amr: [hwk, user]`, `aal: 2`."""
    passkey, count = await _prove(ctx, flow_id, credential, None, "login")
    now = ctx.clock()
    async with ctx.uow() as uow:
        user, _used = await _record_use(ctx, uow, passkey, count, "login")
        # Before the session is added, which would make any device a known one.
        device = clip_user_agent(user_agent)
        new_device = await is_new_device(ctx, uow, user, device, now)
        if new_device:
            await write_notice(ctx, uow, user, "new_device", now, device=device or "unnamed")
        session = await open_session(
            ctx,
            uow,
            user,
            family_id=events.new_id(),
            user_agent=user_agent,
            amr=(HWK, USER),
            aal=AAL2,
        )
        await uow.outbox.add(
            events.user_event(events.LOGGED_IN, user.id, {"factor": "passkey"}, now)
        )
        record(ctx, uow, "login", factor="passkey", user_id=user.id)
        await uow.commit()
    if new_device:
        await push_notice(ctx, user.id, "new_device", now)
    return session
