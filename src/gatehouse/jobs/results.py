"""A job's answer, `{success, message, data}`, the type of the handlers that make it, and what of
it may rest in the queue (`at_rest`).

Refusals add `code` and `errors`; a job that acted on a known account adds `user_id`, so that
its result may be pushed to that account's room."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from gatehouse.domain.users import mask_phone
from gatehouse.errors import GatehouseError
from gatehouse.selfservice.context import FlowContext

Result = dict[str, Any]
# (the job data's schema, the handler: context, validated data, job id -> result)
Handler = tuple[type[BaseModel], Callable[[FlowContext, Any, str | None], Awaitable[Result]]]
# Values that let whoever reads them act as the account: they travel only in the push to the
# job's `notify` room, never in the result the queue keeps (BullMQ's `returnvalue`, readable by
# anyone with Redis access or the job id, for as long as the job is retained).
CREDENTIALS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "mfa_token",
        "code",
        "otp",
        "secret",
        "otpauth_uri",
        "qr_svg",
        "recovery_codes",
    }
)
# Personal data kept recognisable but not usable (a recovery channel).
MASKED = frozenset({"phone", "phone_pending"})
REDACTED = "[redacted]"


def ok(message: str, data: dict[str, Any] | None = None, user_id: str | None = None) -> Result:
    result: Result = {"success": True, "message": message, "data": data or {}}
    if user_id:
        result["user_id"] = user_id
    return result


def refusal(exc: GatehouseError) -> Result:
    return {
        "success": False,
        "message": exc.message,
        "code": exc.code,
        "errors": exc.errors,
        "data": {},
    }


def at_rest(result: Result) -> Result:
    """The result as the queue may keep it: credentials blanked, phones masked, at any depth."""
    # The top-level `code` is a refusal's machine code (`invalid_code`), not a secret.
    return _scrub_dict(result, skip="code")


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return _scrub_dict(value)
    if isinstance(value, list):
        items = [_scrub(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _scrub_dict(value: dict[str, Any], skip: str | None = None) -> dict[str, Any]:
    # Nothing to hide: the same object comes back, so the worker's hot path copies nothing.
    changed: dict[str, Any] | None = None
    for key, item in value.items():
        if item is None or key == skip:
            continue
        if key in CREDENTIALS:
            cleaned: Any = REDACTED
        elif key in MASKED and isinstance(item, str):
            cleaned = mask_phone(item)
        else:
            cleaned = _scrub(item)
        if cleaned is not item and cleaned != item:
            changed = changed or dict(value)
            changed[key] = cleaned
    return value if changed is None else changed
