"""Sign-up on the wire: the HTTP bodies and the `create-user` job's data."""

from __future__ import annotations

from gatehouse.selfservice.fields import (
    Body,
    Email,
    JobData,
    Name,
    NewPassword,
    Otp,
    Phone,
)


class RegisterIn(Body):
    name: Name
    email: Email
    password: NewPassword
    phone: Phone | None = None


class VerifyOtpIn(Body):
    email: Email
    otp: Otp


class ResendOtpIn(Body):
    email: Email


class CreateUserJob(JobData):
    email: Email
    otp: Otp
    password: NewPassword
    name: Name
    phone: Phone | None = None
