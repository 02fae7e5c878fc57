"""Password recovery on the wire: HTTP bodies and answer, and `password-recovery` job data."""

from __future__ import annotations

from gatehouse.selfservice.fields import Body, Channel, Email, JobData, NewPassword, Otp, Phone
from gatehouse.web.schemas import Out


class ForgotIn(Body):
    email: Email | None = None
    phone: Phone | None = None
    channel: Channel = "email"


class ResetIn(Body):
    email: Email | None = None
    phone: Phone | None = None
    otp: Otp
    new_password: NewPassword


class RecoveryRequestJob(JobData):
    email: Email | None = None
    phone: Phone | None = None
    channel: Channel = "email"


class RecoveryResetJob(JobData):
    email: Email | None = None
    phone: Phone | None = None
    otp: Otp
    new_password: NewPassword


class ForgotData(Out):
    """The `data` of password/forgot: the reset code's lifetime in seconds (the same answer
    whether or not an account matches)."""

    expires_in: int
