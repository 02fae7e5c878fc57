"""Password recovery on the wire: the HTTP bodies and the `password-recovery` jobs' data."""

from __future__ import annotations

from gatehouse.selfservice.fields import Body, Channel, Email, JobData, NewPassword, Otp, Phone


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
