"""Recovery codes as stored: made at the first second factor (app or passkey) and on request,
and taken away with the last one, whichever kind of factor that is."""

from __future__ import annotations

from datetime import datetime

from gatehouse.domain import factors
from gatehouse.ports import UnitOfWork
from gatehouse.selfservice.context import FlowContext


async def store_new_codes(
    ctx: FlowContext, uow: UnitOfWork, user_id: str, now: datetime
) -> list[str]:
    """Ten new codes in place of the old ones, in the caller's transaction; returns them, to be
    shown once."""
    codes = factors.new_recovery_codes()
    key = ctx.secrets.code_key
    hashes = [factors.recovery_code_hash(key, user_id, code) for code in codes]
    await uow.factors.replace_recovery_codes(user_id, hashes, now)
    return codes


async def has_factor(uow: UnitOfWork, user_id: str) -> bool:
    """Whether the account has a second factor a sign-in can finish with."""
    methods = await uow.factors.methods(user_id)
    return "totp" in methods or "passkey" in methods


async def drop_if_no_factor(uow: UnitOfWork, user_id: str, now: datetime) -> None:
    """The recovery codes go with the last factor: they recover a factor, and none is left."""
    if not await has_factor(uow, user_id):
        await uow.factors.replace_recovery_codes(user_id, [], now)
