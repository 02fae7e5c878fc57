"""Second factors on the wire: the authenticator app and recovery-code bodies and answers, and
the `mfa` queue's job data (job names `totp-setup`, `totp-confirm`, `totp-remove`,
`recovery-codes`)."""

from __future__ import annotations

from gatehouse.selfservice.fields import AccessToken, Body, FactorCode, JobData, Otp, Password
from gatehouse.web.schemas import Out


class StepUpIn(Body):
    """A sensitive change's proof when the session's sign-in is not recent: the password, and
    the second factor's `code` (TOTP or recovery code) when the account has one."""

    current_password: Password | None = None
    code: FactorCode | None = None


class TotpConfirmIn(Body):
    code: Otp


class TotpSetupData(Out):
    """The new secret, shown once: as text, as an `otpauth://` URI and as a QR code (SVG)."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodesData(Out):
    """Ten single-use codes, shown once; each signs in once in place of the second factor."""

    recovery_codes: list[str]


class MfaStatusData(Out):
    totp: bool
    passkeys: bool
    recovery_codes_left: int


class MfaJob(JobData):
    """Every `mfa` job: the user's access token and the step-up proof if needed; `code` is the
    app's first code for `totp-confirm`, else the second factor of the step-up."""

    token: AccessToken
    current_password: Password | None = None
    code: FactorCode | None = None
