"""A flow's refusal as a page says it: the status the API would answer, the message (by key, in
the page's language), `Retry-After` when there is a wait, and whether it calls for the
re-authentication step. The one place of the pages that catches the flows' errors."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gatehouse import errors
from gatehouse.ui.text import Text
from gatehouse.web.errors import STATUS

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Refusal:
    """Why a step did not go through: `key` names the message, `fields` fill it."""

    status: int
    code: str
    key: str
    fields: dict[str, Any] = field(default_factory=dict)
    retry_after: int | None = None
    field: str | None = None  # the form field at fault, if one is

    @property
    def reauth(self) -> bool:
        return self.code == errors.ReauthRequired.code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def message(self, t: Text) -> str:
        fields = dict(self.fields)
        if self.retry_after is not None:
            fields["wait"] = wait_text(t, self.retry_after)
        return t(self.key, **fields)


def wait_text(t: Text, seconds: int) -> str:
    if seconds >= 2 * 3600:
        return t("wait_hours", n=-(-seconds // 3600))
    if seconds >= 120:
        return t("wait_minutes", n=-(-seconds // 60))
    return t("wait_seconds", n=seconds) if seconds > 1 else t("wait_second")


def _status(exc: errors.GatehouseError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def _field_key(problem: dict[str, Any], context: str) -> tuple[str, str | None]:
    name = str(problem.get("field", ""))
    text = str(problem.get("message", "")).lower()
    if name in ("password", "new_password"):
        if "common" in text:
            return "err_password_common", name
        if "at most" in text or "too_long" in text:
            return "err_password_long", name
        if "at least" in text or "too_short" in text:
            return "err_password_short", name
        return "err_invalid", name
    if name == "name":
        return ("err_passkey_name" if context == "passkey" else "err_name"), name
    by_field = {
        "email": "err_email",
        "phone": "err_phone",
        "otp": "err_code_missing",
        "code": "err_factor_required",
        "recovery_code": "err_code_missing",
    }
    return by_field.get(name, "err_invalid"), name or None


def describe(exc: errors.GatehouseError, context: str = "") -> Refusal:
    """The page's refusal for a flow's error. `context` picks among messages an error carries
    in several flows (`mfa`: an expired second step; `passkey`: a passkey's name)."""
    status, code, text = _status(exc), exc.code, exc.message.lower()
    if isinstance(exc, errors.RateLimited):
        key = "err_code_recently" if "code was sent recently" in text else "err_rate_limited"
        return Refusal(status, code, key, retry_after=exc.retry_after)
    if isinstance(exc, errors.Unavailable):
        return Refusal(status, code, "err_unavailable", retry_after=5)
    if isinstance(exc, errors.ReauthRequired):
        return Refusal(status, code, "err_reauth")
    if isinstance(exc, errors.InvalidInput):
        if "either an email or a phone" in text:
            return Refusal(status, code, "err_identify", field="email")
        key, name = _field_key((exc.errors or [{}])[0], context)
        return Refusal(status, code, key, field=name)
    if isinstance(exc, errors.InvalidCode):
        if "too many wrong codes" in text:
            return Refusal(status, code, "err_too_many_codes")
        if "second-factor" in text or "authenticator" in text:
            return Refusal(status, code, "err_wrong_factor", field="code")
        if "passkey" in text:
            return Refusal(status, code, "err_passkey_refused")
        return Refusal(status, code, "err_wrong_code", field="code")
    if isinstance(exc, errors.InvalidCredentials):
        if "passkey" in text:
            return Refusal(status, code, "err_passkey_refused")
        if "password is wrong" in text:
            return Refusal(status, code, "err_password_wrong", field="password")
        return Refusal(status, code, "err_credentials")
    if isinstance(exc, errors.InvalidToken):
        return Refusal(status, code, "err_mfa_expired" if context == "mfa" else "err_session")
    return Refusal(status, code, _other_key(exc, text))


def _other_key(exc: errors.GatehouseError, text: str) -> str:
    if isinstance(exc, errors.Conflict):
        if "already set up" in text:
            return "err_totp_exists"
        return "err_passkey_known" if "already registered" in text else "err_conflict"
    if isinstance(exc, errors.NotFound):
        return "err_no_passkey" if "no passkey" in text else "err_not_found"
    if isinstance(exc, errors.Forbidden):
        return "err_csrf"
    return "err_unexpected"


async def attempt(work: Awaitable[T], context: str = "") -> T | Refusal:
    """The flow's answer, or its refusal as the page says it."""
    try:
        return await work
    except errors.GatehouseError as exc:
        return describe(exc, context)


def validated(model: type[M], data: dict[str, Any], context: str = "") -> M | Refusal:
    """A form read with the API's own wire model (the same limits), or its refusal."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": str(p["loc"][0]) if p.get("loc") else "", "message": p.get("type", "")}
            for p in exc.errors()
        ]
        return describe(errors.InvalidInput(errors=problems), context)
