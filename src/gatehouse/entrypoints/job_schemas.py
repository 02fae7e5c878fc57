"""What each queue's job data must hold. Unknown fields are ignored (producers such as the seed
services send extra ones), so `role` or `is_admin` in a job can never reach a flow."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

Password = Annotated[str, Field(min_length=1, max_length=1024)]
Token = Annotated[str, Field(min_length=1, max_length=4096)]
Otp = Annotated[str, Field(min_length=1, max_length=16)]
Channel = Literal["email", "sms", "whatsapp"]


class JobData(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    notify: Annotated[str, Field(max_length=200)] | None = None


class VerificationJob(JobData):
    channel: Channel
    to: Annotated[str, Field(min_length=1, max_length=320)]
    purpose: Literal["register", "recovery"]


class CreateUserJob(JobData):
    email: EmailStr
    otp: Otp
    password: Password
    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(max_length=32)] | None = None


class VerifyUserJob(JobData):
    email: EmailStr
    password: Password


class ReadUserJob(JobData):
    token: Token


class UpdateUserJob(JobData):
    token: Token
    name: Annotated[str, Field(max_length=200)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    image: Annotated[str, Field(max_length=2048)] | None = None
    password: Password | None = None
    current_password: Password | None = None


class DeleteUserJob(JobData):
    token: Token
    password: Password


class RecoveryRequestJob(JobData):
    email: EmailStr | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    channel: Channel = "email"


class RecoveryResetJob(JobData):
    email: EmailStr | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    otp: Otp
    new_password: Password
