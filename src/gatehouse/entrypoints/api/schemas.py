"""Wire schemas: what clients send. Unknown fields are refused, so `role` or `is_admin` can never
slip through to a flow."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool

Password = Annotated[str, Field(min_length=1, max_length=1024)]
# A password being set: the policy's bounds, so the schema says what the server accepts.
NewPassword = Annotated[str, Field(min_length=8, max_length=256)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: EmailStr
    password: NewPassword
    phone: Annotated[str, Field(max_length=32)] | None = None


class VerifyOtpIn(Body):
    email: EmailStr
    otp: Annotated[str, Field(min_length=1, max_length=16)]


class ResendOtpIn(Body):
    email: EmailStr


class LoginIn(Body):
    email: EmailStr
    password: Password


class ProfileUpdateIn(Body):
    name: Annotated[str, Field(max_length=200)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    image: Annotated[str, Field(max_length=2048)] | None = None
    password: NewPassword | None = None
    current_password: Password | None = None


class ProfileDeleteIn(Body):
    password: Password


class ForgotIn(Body):
    email: EmailStr | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    channel: Literal["email", "sms", "whatsapp"] = "email"


class ResetIn(Body):
    email: EmailStr | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    otp: Annotated[str, Field(min_length=1, max_length=16)]
    new_password: NewPassword


class LogoutIn(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]
    everywhere: StrictBool = False


class RefreshIn(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class ErrorOut(BaseModel):
    """The error envelope every failure answers with."""

    status: Literal["error"]
    message: str
    code: str
    errors: list[dict[str, Any]]


_MEANING = {
    400: "Malformed request (not JSON, not an object) or a wrong or expired code",
    401: "Bad credentials, or a missing, invalid, expired or revoked token",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict with an existing account",
    413: "Request body too large",
    422: "Invalid fields, listed in `errors`",
    429: "Rate limited; see the Retry-After header",
    503: "A dependency is unavailable; retry after Retry-After",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": meaning} for status, meaning in _MEANING.items()
}
