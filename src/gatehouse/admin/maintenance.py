"""Operator tasks: re-encrypting personal data under the newest key, importing legacy users."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.audit import ADMIN
from gatehouse.domain.crypto import CIPHERTEXT_VERSION
from gatehouse.domain.factors import TOTP_CONTEXT
from gatehouse.domain.users import User, normalize_email
from gatehouse.errors import Conflict, GatehouseError
from gatehouse.selfservice.audit import record as audit_record
from gatehouse.selfservice.context import PHONE_CONTEXT, FlowContext
from gatehouse.selfservice.validation import require_name, require_phone

ACCEPTED_HASHES = ("$argon2id$", "$2a$", "$2b$", "$2y$")


async def reencrypt(ctx: FlowContext, *, batch: int = 500) -> int:
    """Re-encrypt every phone and authenticator-app secret not under the current data key, a
    batch per transaction. Safe to stop and run again: it only ever picks rows still under an
    older key."""
    prefix = f"{CIPHERTEXT_VERSION}.{ctx.keyring.current_kid}."
    total = 0
    while True:
        async with ctx.uow() as uow:
            users = await uow.users.encrypted_not_under(prefix, batch)
            pending = await uow.pending.encrypted_not_under(prefix, batch)
            for user in users:
                assert user.phone_ciphertext is not None
                phone = ctx.keyring.decrypt(user.phone_ciphertext, PHONE_CONTEXT)
                await uow.users.update(
                    user.with_changes(phone_ciphertext=ctx.keyring.encrypt(phone, PHONE_CONTEXT))
                )
            for item in pending:
                assert item.phone_ciphertext is not None
                phone = ctx.keyring.decrypt(item.phone_ciphertext, PHONE_CONTEXT)
                await uow.pending.put(
                    replace(item, phone_ciphertext=ctx.keyring.encrypt(phone, PHONE_CONTEXT))
                )
            await uow.commit()
        done = len(users) + len(pending)
        total += done
        if done == 0:
            return total + await _reencrypt_totp(ctx, prefix, batch)


async def _reencrypt_totp(ctx: FlowContext, prefix: str, batch: int) -> int:
    """The apps' secrets, walked in user-id order (few accounts have one: no index needed)."""
    done, after = 0, ""
    while True:
        async with ctx.uow() as uow:
            page = await uow.factors.totp_page(after, batch)
            for factor in page:
                if not factor.secret_ciphertext.startswith(prefix):
                    secret = ctx.keyring.decrypt(factor.secret_ciphertext, TOTP_CONTEXT)
                    sealed = ctx.keyring.encrypt(secret, TOTP_CONTEXT)
                    await uow.factors.rewrap_totp(factor.user_id, sealed)
                    done += 1
            await uow.commit()
        if len(page) < batch:
            return done
        after = page[-1].user_id


@dataclass
class ImportReport:
    created: int = 0
    existing: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)


async def import_users(
    ctx: FlowContext, records: Iterable[Mapping[str, Any] | GatehouseError], by: str = "cli"
) -> ImportReport:
    """Load users exported from another system, keeping their password hashes: bcrypt
    (`$2a$`/`$2b$`/`$2y$`) verifies and is re-hashed to argon2id at the next login. One
    transaction per user, so a bad record costs only itself; existing emails are left alone.
    A record the door already refused comes as its error, so that it is counted in its place."""
    report = ImportReport()
    for number, record in enumerate(records, start=1):
        if isinstance(record, GatehouseError):
            report.invalid.append((number, record.message))
            continue
        try:
            user = _user_from(ctx, record)
        except (GatehouseError, KeyError, TypeError, ValueError) as exc:
            report.invalid.append((number, _reason(exc)))
            continue
        now = ctx.clock()
        try:
            async with ctx.uow() as uow:
                if await uow.users.get_by_email(user.email) is not None:
                    report.existing += 1
                    continue
                await uow.users.add(user)
                data = {"email": user.email, "imported": True}
                await uow.outbox.add(events.user_event(events.REGISTERED, user.id, data, now))
                if user.email_verified_at is not None:
                    await uow.outbox.add(events.user_event(events.VERIFIED, user.id, data, now))
                audit_record(ctx, uow, "account.import", user_id=user.id, actor=ADMIN, actor_id=by)
                await uow.commit()
        except Conflict:
            report.invalid.append((number, "phone already used by another account"))
            continue
        report.created += 1
    return report


def _user_from(ctx: FlowContext, record: Mapping[str, Any]) -> User:
    email = normalize_email(str(record["email"]))
    if "@" not in email or any(c in email for c in "\r\n ,;<>"):
        raise ValueError("invalid email")
    password_hash = str(record["password_hash"]).strip()
    if not password_hash.startswith(ACCEPTED_HASHES):
        raise ValueError("password_hash must be bcrypt ($2a$, $2b$, $2y$) or argon2id")
    name = require_name(str(record.get("name") or email.split("@")[0]))
    phone = require_phone(str(record["phone"])) if record.get("phone") else None
    verified = str(record.get("email_verified", "true")).strip().lower() not in ("false", "0", "no")
    now = ctx.clock()
    return User(
        id=events.new_id(),
        email=email,
        name=name,
        password_hash=password_hash,
        created_at=now,
        updated_at=now,
        **ctx.phone_fields(phone),
        email_verified_at=now if verified else None,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]}"
    if isinstance(exc, GatehouseError):
        return exc.message
    return str(exc)
