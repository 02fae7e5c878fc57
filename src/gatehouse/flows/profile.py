"""Reading the signed-in user's profile."""

from __future__ import annotations

from typing import Any

from gatehouse.domain.users import public_view
from gatehouse.errors import InvalidToken
from gatehouse.flows.context import FlowContext, phone_of
from gatehouse.flows.session import authenticate


async def read(ctx: FlowContext, *, token: str) -> dict[str, Any]:
    user_id = authenticate(ctx, token)
    async with ctx.uow() as uow:
        user = await uow.users.get(user_id)
    if user is None:  # deleted since the token was issued
        raise InvalidToken()
    return public_view(user, phone_of(ctx, user))
