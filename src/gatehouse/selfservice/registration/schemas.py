"""Sign-up on the wire: the HTTP bodies and answers, and the `create-user` job's data."""

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
from gatehouse.selfservice.profile.schemas import UserData
from gatehouse.web.schemas import Out


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


class RegisterData(Out):
    """The `data` of register and resend-otp: the address a code went to (the same answer for an
    address that has an account) and the code's lifetime in seconds."""

    email: str
    expires_in: int


class VerifiedData(UserData):
    """The `data` of verify-otp: the new account, and whether it still needs a password. True
    for a contested sign-up (the address signed up twice with different passwords): the account
    has none, and no sign-in succeeds until its owner sets one through password recovery."""

    password_required: bool
