"""Password sign-in on the wire: the HTTP body and answer, and the `verify-user` job's data."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gatehouse.selfservice.fields import Body, Email, JobData, Otp, Password
from gatehouse.selfservice.profile.schemas import UserOut
from gatehouse.web.schemas import Out


class LoginIn(Body):
    email: Email
    password: Password


MfaToken = Annotated[str, Field(min_length=1, max_length=512)]
RecoveryCode = Annotated[str, Field(min_length=1, max_length=64)]
FlowId = Annotated[str, Field(min_length=1, max_length=128)]


class SecondFactorIn(Body):
    """`POST /api/auth/login/mfa`: the `mfa_token` and one factor: a TOTP `code`, a
    `recovery_code`, or a passkey assertion (`flow_id` and `credential`)."""

    mfa_token: MfaToken
    code: Otp | None = None
    recovery_code: RecoveryCode | None = None
    flow_id: FlowId | None = None
    credential: dict[str, Any] | None = None


class VerifyUserJob(JobData):
    """A sign-in: `{email, password}`, or its second step `{mfa_token, code | recovery_code}`."""

    email: Email | None = None
    password: Password | None = None
    mfa_token: MfaToken | None = None
    code: Otp | None = None
    recovery_code: RecoveryCode | None = None

    @model_validator(mode="after")
    def _one_step(self) -> VerifyUserJob:
        if self.mfa_token is None and (self.email is None or self.password is None):
            raise ValueError("email and password, or mfa_token with code or recovery_code")
        return self


class MfaRequiredData(Out):
    """A right password for an account with a second factor: no tokens yet, the token that
    finishes the sign-in at `POST /api/auth/login/mfa` (5 minutes, 5 tries) and the methods."""

    mfa_required: Literal[True]
    mfa_token: str
    methods: list[Literal["totp", "passkey", "recovery_code"]]
    expires_in: int


class LoginData(Out):
    """The `data` of a sign-in, and of a refresh (a new pair for the same session): the access
    token, its lifetime in seconds, the refresh token and the user."""

    token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    user: UserOut
