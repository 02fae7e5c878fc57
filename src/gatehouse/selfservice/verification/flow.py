"""A code sent on demand: a sign-up code by email, or a recovery code on any channel."""

from __future__ import annotations

from gatehouse.errors import InvalidInput
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.registration import flow as registration


async def send_code(ctx: FlowContext, *, channel: str, to: str, purpose: str) -> int:
    """Send the code for `purpose` to `to` (an email, or a phone for SMS and WhatsApp); returns
    the code's lifetime in seconds. `to` is an email already checked when `channel` is email."""
    if purpose == "register":
        if channel != "email":
            raise InvalidInput(
                "Sign-up codes are sent by email",
                errors=[{"field": "channel", "message": "invalid"}],
            )
        accepted = await registration.send_signup_code(ctx, email=to)
        return accepted.expires_in
    if channel == "email":
        return await recovery.request(ctx, email=to, channel="email")
    return await recovery.request(ctx, phone=to, channel=channel)
