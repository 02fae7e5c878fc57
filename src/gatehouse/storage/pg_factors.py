"""The `Factors` repository straight on asyncpg: `sql_factors.py`'s statements, written out
(PostgreSQL's own unit of work speaks asyncpg, not SQLAlchemy)."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.errors import Conflict
from gatehouse.storage.pg_sessions import _aware, _naive
from gatehouse.storage.sql_factors import credential_key

if TYPE_CHECKING:
    from gatehouse.storage.pg import PgUnitOfWork

_TOTP = tuple(f.name for f in fields(TotpFactor))
_PASSKEY = tuple(f.name for f in fields(Passkey))
_SELECT_TOTP = f"SELECT {', '.join(_TOTP)} FROM totp_factors WHERE "  # noqa: S608 - constants
_SELECT_PASSKEY = f"SELECT {', '.join(_PASSKEY)} FROM passkeys WHERE "  # noqa: S608 - constants
_INSERT_PASSKEY = "INSERT INTO passkeys ({}, credential_key) VALUES ({})".format(  # noqa: S608
    ", ".join(_PASSKEY), ", ".join(f"${i}" for i in range(1, len(_PASSKEY) + 2))
)
_METHODS = (
    "SELECT (SELECT count(*) FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL),"
    " (SELECT count(*) FROM passkeys WHERE user_id = $1),"
    " (SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL)"
)


def _count(status: Any) -> int:
    """Rows touched, from asyncpg's status line ("UPDATE 1")."""
    return int(str(status).rsplit(" ", 1)[-1])


class PgFactors:
    def __init__(self, uow: PgUnitOfWork):
        self._uow = uow

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        return await self._uow.run(method, query, *(_naive(a) for a in args))

    async def totp(self, user_id: str) -> TotpFactor | None:
        row = await self._run("fetchrow", _SELECT_TOTP + "user_id = $1", user_id)
        return None if row is None else TotpFactor(*_aware(list(row.values())))

    async def put_totp(self, factor: TotpFactor) -> None:
        await self._run(
            "execute",
            "DELETE FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NULL",
            factor.user_id,
        )
        await self._run(
            "execute",
            f"INSERT INTO totp_factors ({', '.join(_TOTP)}) VALUES ($1, $2, $3, $4, $5)",  # noqa: S608
            *(getattr(factor, name) for name in _TOTP),
        )

    async def confirm_totp(self, user_id: str, now: datetime, step: int) -> bool:
        status = await self._run(
            "execute",
            "UPDATE totp_factors SET confirmed_at = $2, last_step = $3 "
            "WHERE user_id = $1 AND confirmed_at IS NULL",
            user_id,
            now,
            step,
        )
        return _count(status) == 1

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        status = await self._run(
            "execute",
            "UPDATE totp_factors SET last_step = $2 "
            "WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
            user_id,
            step,
        )
        return _count(status) == 1

    async def remove_totp(self, user_id: str) -> bool:
        status = await self._run("execute", "DELETE FROM totp_factors WHERE user_id = $1", user_id)
        return _count(status) > 0

    async def rewrap_totp(self, user_id: str, secret_ciphertext: str) -> None:
        await self._run(
            "execute",
            "UPDATE totp_factors SET secret_ciphertext = $2 WHERE user_id = $1",
            user_id,
            secret_ciphertext,
        )

    async def totp_page(self, after: str, limit: int) -> list[TotpFactor]:
        rows = await self._run(
            "fetch", _SELECT_TOTP + "user_id > $1 ORDER BY user_id LIMIT $2", after, limit
        )
        return [TotpFactor(*_aware(list(row.values()))) for row in rows]

    async def replace_recovery_codes(
        self, user_id: str, code_hashes: list[str], now: datetime
    ) -> None:
        await self._run("execute", "DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        if code_hashes:
            # One statement for the ten rows: an array unnested, not ten round trips.
            await self._run(
                "execute",
                "INSERT INTO recovery_codes (code_hash, user_id, created_at) "
                "SELECT h, $2, $3 FROM unnest($1::text[]) AS h",
                code_hashes,
                user_id,
                now,
            )

    async def use_recovery_code(self, user_id: str, code_hash: str, now: datetime) -> bool:
        status = await self._run(
            "execute",
            "UPDATE recovery_codes SET used_at = $3 "
            "WHERE code_hash = $1 AND user_id = $2 AND used_at IS NULL",
            code_hash,
            user_id,
            now,
        )
        return _count(status) == 1

    async def recovery_codes_left(self, user_id: str) -> int:
        query = "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"
        row = await self._run("fetchrow", query, user_id)
        return int(row[0])

    async def add_passkey(self, passkey: Passkey) -> None:
        values = [getattr(passkey, name) for name in _PASSKEY]
        key = credential_key(passkey.credential_id)
        try:
            await self._run("execute", _INSERT_PASSKEY, *values, key)
        except asyncpg.UniqueViolationError as exc:  # registered (to whichever account)
            raise Conflict("This passkey is already registered") from exc

    async def passkeys(self, user_id: str) -> list[Passkey]:
        rows = await self._run(
            "fetch", _SELECT_PASSKEY + "user_id = $1 ORDER BY created_at, id", user_id
        )
        return [Passkey(*_aware(list(row.values()))) for row in rows]

    async def passkey_by_credential(self, credential_id: str) -> Passkey | None:
        query = _SELECT_PASSKEY + "credential_key = $1"
        row = await self._run("fetchrow", query, credential_key(credential_id))
        return None if row is None else Passkey(*_aware(list(row.values())))

    async def use_passkey(self, passkey_id: str, sign_count: int, now: datetime) -> bool:
        status = await self._run(
            "execute",
            "UPDATE passkeys SET sign_count = $2, last_used_at = $3 WHERE id = $1 "
            "AND (sign_count < $2 OR (sign_count = 0 AND $2 = 0))",
            passkey_id,
            sign_count,
            now,
        )
        return _count(status) == 1

    async def remove_passkey(self, user_id: str, passkey_id: str) -> bool:
        status = await self._run(
            "execute", "DELETE FROM passkeys WHERE id = $1 AND user_id = $2", passkey_id, user_id
        )
        return _count(status) == 1

    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool:
        status = await self._run(
            "execute",
            "UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2",
            passkey_id,
            user_id,
            name,
        )
        return _count(status) == 1

    async def methods(self, user_id: str) -> tuple[str, ...]:
        row = await self._run("fetchrow", _METHODS, user_id)
        found = zip(("totp", "passkey", "recovery_code"), row.values(), strict=True)
        return tuple(name for name, count in found if count)

    async def remove_all(self, user_id: str) -> None:
        for table in ("totp_factors", "recovery_codes", "passkeys"):
            await self._run("execute", f"DELETE FROM {table} WHERE user_id = $1", user_id)  # noqa: S608
