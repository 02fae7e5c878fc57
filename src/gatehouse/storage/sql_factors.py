"""The `Factors` repository on SQLAlchemy (SQLite, MariaDB/MySQL, PostgreSQL): authenticator
apps, recovery codes and passkeys. Every spend (a TOTP step, a recovery code, a passkey's
counter) is one conditional UPDATE, so two requests racing with one code cannot both win."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.errors import Conflict
from gatehouse.storage.schema import passkeys, recovery_codes, totp_factors

if TYPE_CHECKING:
    from gatehouse.storage.sql import Executor

_PASSKEY_NAMES = tuple(c.name for c in passkeys.c if c.name != "credential_key")


def credential_key(credential_id: str) -> str:
    """The indexable stand-in of a (possibly 1023-byte) credential id."""
    return hashlib.sha256(credential_id.encode()).hexdigest()


def _passkey(row: Any) -> Passkey:
    return Passkey(**{name: row._mapping[name] for name in _PASSKEY_NAMES})


class SqlFactors:
    def __init__(self, conn: Executor):
        self._conn = conn

    # --- authenticator app ----------------------------------------------------------------

    async def totp(self, user_id: str) -> TotpFactor | None:
        query = select(totp_factors).where(totp_factors.c.user_id == user_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else TotpFactor(**row._mapping)

    async def put_totp(self, factor: TotpFactor) -> None:
        """A new (unconfirmed) app in place of an unconfirmed one."""
        await self._conn.execute(
            delete(totp_factors).where(
                totp_factors.c.user_id == factor.user_id, totp_factors.c.confirmed_at.is_(None)
            )
        )
        await self._conn.execute(
            insert(totp_factors).values(
                user_id=factor.user_id,
                secret_ciphertext=factor.secret_ciphertext,
                created_at=factor.created_at,
                confirmed_at=factor.confirmed_at,
                last_step=factor.last_step,
            )
        )

    async def confirm_totp(self, user_id: str, now: datetime, step: int) -> bool:
        result = await self._conn.execute(
            update(totp_factors)
            .where(totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_(None))
            .values(confirmed_at=now, last_step=step)
        )
        return int(result.rowcount) == 1

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        result = await self._conn.execute(
            update(totp_factors)
            .where(
                totp_factors.c.user_id == user_id,
                totp_factors.c.confirmed_at.is_not(None),
                totp_factors.c.last_step < step,
            )
            .values(last_step=step)
        )
        return int(result.rowcount) == 1

    async def remove_totp(self, user_id: str) -> bool:
        result = await self._conn.execute(
            delete(totp_factors).where(totp_factors.c.user_id == user_id)
        )
        return int(result.rowcount) > 0

    async def rewrap_totp(self, user_id: str, secret_ciphertext: str) -> None:
        """The same secret under the newest data key (`keys rotate-data`)."""
        await self._conn.execute(
            update(totp_factors)
            .where(totp_factors.c.user_id == user_id)
            .values(secret_ciphertext=secret_ciphertext)
        )

    async def totp_page(self, after: str, limit: int) -> list[TotpFactor]:
        query = (
            select(totp_factors)
            .where(totp_factors.c.user_id > after)
            .order_by(totp_factors.c.user_id)
            .limit(limit)
        )
        return [TotpFactor(**row._mapping) for row in await self._conn.execute(query)]

    # --- recovery codes -------------------------------------------------------------------

    async def replace_recovery_codes(
        self, user_id: str, code_hashes: list[str], now: datetime
    ) -> None:
        await self._conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        rows = [{"code_hash": h, "user_id": user_id, "created_at": now} for h in code_hashes]
        if rows:  # one multi-row INSERT
            await self._conn.execute(insert(recovery_codes).values(rows))

    async def use_recovery_code(self, user_id: str, code_hash: str, now: datetime) -> bool:
        result = await self._conn.execute(
            update(recovery_codes)
            .where(
                recovery_codes.c.code_hash == code_hash,
                recovery_codes.c.user_id == user_id,
                recovery_codes.c.used_at.is_(None),
            )
            .values(used_at=now)
        )
        return int(result.rowcount) == 1

    async def recovery_codes_left(self, user_id: str) -> int:
        query = select(func.count()).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)
        )
        return int((await self._conn.execute(query)).scalar_one())

    # --- passkeys -------------------------------------------------------------------------

    async def add_passkey(self, passkey: Passkey) -> None:
        values = {name: getattr(passkey, name) for name in _PASSKEY_NAMES}
        values["credential_key"] = credential_key(passkey.credential_id)
        try:
            await self._conn.execute(insert(passkeys).values(values))
        except IntegrityError as exc:  # the credential is registered (to whichever account)
            raise Conflict("This passkey is already registered") from exc

    async def passkeys(self, user_id: str) -> list[Passkey]:
        query = (
            select(passkeys)
            .where(passkeys.c.user_id == user_id)
            .order_by(passkeys.c.created_at, passkeys.c.id)
        )
        return [_passkey(row) for row in await self._conn.execute(query)]

    async def passkey_by_credential(self, credential_id: str) -> Passkey | None:
        query = select(passkeys).where(passkeys.c.credential_key == credential_key(credential_id))
        row = (await self._conn.execute(query)).first()
        return None if row is None else _passkey(row)

    async def use_passkey(self, passkey_id: str, sign_count: int, now: datetime) -> bool:
        """Record a use. The counter must go forward; an authenticator that keeps none (0 each
        time) is let through, as WebAuthn allows."""
        forward = or_(
            passkeys.c.sign_count < sign_count,
            and_(passkeys.c.sign_count == 0, literal(sign_count) == 0),
        )
        result = await self._conn.execute(
            update(passkeys)
            .where(passkeys.c.id == passkey_id, forward)
            .values(sign_count=sign_count, last_used_at=now)
        )
        return int(result.rowcount) == 1

    async def remove_passkey(self, user_id: str, passkey_id: str) -> bool:
        result = await self._conn.execute(
            delete(passkeys).where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
        )
        return int(result.rowcount) == 1

    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool:
        result = await self._conn.execute(
            update(passkeys)
            .where(passkeys.c.id == passkey_id, passkeys.c.user_id == user_id)
            .values(name=name)
        )
        return int(result.rowcount) == 1

    # --- the account as a whole -----------------------------------------------------------

    async def methods(self, user_id: str) -> tuple[str, ...]:
        """The second factors a sign-in can finish with: `totp` (confirmed), `passkey`,
        `recovery_code` (any left), in one round trip."""
        totp = select(func.count()).where(
            totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_not(None)
        )
        keys = select(func.count()).where(passkeys.c.user_id == user_id)
        codes = select(func.count()).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)
        )
        query = select(totp.scalar_subquery(), keys.scalar_subquery(), codes.scalar_subquery())
        row = (await self._conn.execute(query)).one()
        found = zip(("totp", "passkey", "recovery_code"), row, strict=True)
        return tuple(name for name, count in found if count)

    async def remove_all(self, user_id: str) -> None:
        for table in (totp_factors, recovery_codes, passkeys):
            await self._conn.execute(delete(table).where(table.c.user_id == user_id))
