"""Per-account rate limits (`<action>_account`), counted in the flows so every door meets them."""

from __future__ import annotations

from gatehouse.errors import RateLimited
from gatehouse.selfservice.context import FlowContext


async def limit_account(ctx: FlowContext, action: str, account: str) -> None:
    """Count one attempt of `action` on `account` (an email or phone); RateLimited once over."""
    # Keyed by the account's blind index, never the address; counted whether or not an account
    # exists, so a 429 says nothing about which are registered. An HTTP route, the job door, a
    # Node producer straight into Redis: all of them run this flow, so they share one counter.
    wait = await ctx.limiter.hit(f"{action}_account", ctx.blind_index("account", account))
    if wait:
        raise RateLimited(wait)
