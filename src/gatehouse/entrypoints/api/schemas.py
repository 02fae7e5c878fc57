"""Wire schemas: what clients send. Unknown fields are refused, so `role` or `is_admin` can never
slip through to a flow."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

Password = Annotated[str, Field(min_length=1, max_length=1024)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: EmailStr
    password: Password
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
    password: Password | None = None
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
    new_password: Password


class RefreshIn(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]
