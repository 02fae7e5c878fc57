"""Per-account rate limits (`<action>_account`), counted in the flows so every door meets them,
and the account's sign-in failure throttle, which every check of a credential meets."""

from __future__ import annotations

from gatehouse.domain.throttle import login_wait
from gatehouse.errors import RateLimited
from gatehouse.selfservice.audit import audit
from gatehouse.selfservice.context import FlowContext


async def limit_account(ctx: FlowContext, action: str, account: str) -> None:
    """Count one attempt of `action` on `account` (an email or phone); RateLimited once over."""
    # Keyed by the account's blind index, never the address; counted whether or not an account
    # exists, so a 429 says nothing about which are registered. An HTTP route, the job door, a
    # Node producer straight into Redis: all of them run this flow, so they share one counter.
    wait = await ctx.limiter.hit(f"{action}_account", ctx.blind_index("account", account))
    if wait:
        raise RateLimited(wait)


async def sign_in_throttle(
    ctx: FlowContext,
    email: str,
    action: str,
    *,
    factor: str | None = None,
    user_id: str | None = None,
) -> tuple[str, int]:
    """The account's sign-in failure throttle: the sign-in, its second step and every proof
    inside a session (a password or a code) meet the same one, so none is a faster oracle than
    the login form. RateLimited (logged as `action` throttled) while it makes the account wait;
    else its key, where a failure is counted or cleared, and the failures counted so far."""
    key = ctx.blind_index("login", email)
    started = ctx.clock().timestamp()
    failures, last_failure = await ctx.failures.get(key, started)
    wait = login_wait(failures, last_failure, started)
    if wait:
        audit(action, "throttled", factor=factor, user_id=user_id)
        raise RateLimited(wait, "Too many failed sign-in attempts; try again later")
    return key, failures
