"""A passkey's new name, chosen by its owner after adding it (the self-service pages start the
browser's prompt at once and let the name be changed afterwards). A name is only a label: no
recent authentication, no event, no notice."""

from __future__ import annotations

from typing import Any

from gatehouse.errors import NotFound
from gatehouse.selfservice.audit import audit, record
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.passkeys.flow import _label, passkey_view
from gatehouse.selfservice.sessions.flow import authenticate


async def rename(ctx: FlowContext, *, token: str, passkey_id: str, name: str) -> dict[str, Any]:
    """Rename one of the account's passkeys (an empty name gives the default one). Someone
    else's and an unknown one are the same 404. Returns the passkey as its owner sees it."""
    label = _label(name)
    async with ctx.uow() as uow:
        user, _claims = await authenticate(ctx, uow, token)
        if not await uow.factors.rename_passkey(user.id, passkey_id, label):
            audit("passkey.rename", "failure", factor="access_token", user_id=user.id)
            raise NotFound("No such passkey")
        renamed = [p for p in await uow.factors.passkeys(user.id) if p.id == passkey_id]
        record(ctx, uow, "passkey.rename", factor="access_token", user_id=user.id)
        await uow.commit()
    return passkey_view(renamed[0])
