"""The profile on the wire: HTTP bodies and answers (the user), and the *-user jobs' data."""

from __future__ import annotations

from pydantic import AwareDatetime

from gatehouse.selfservice.fields import (
    AccessToken,
    Body,
    FactorCode,
    Image,
    JobData,
    NewName,
    NewPassword,
    Otp,
    Password,
    Phone,
)
from gatehouse.web.schemas import Out

# The answers' messages, the same from every door.
UPDATED = "User updated successfully"
PHONE_CODE_SENT = "A code was sent to the new phone number; it is the account's once confirmed"
PHONE_VERIFIED = "Phone number verified"


class ProfileUpdateIn(Body):
    name: NewName | None = None
    phone: Phone | None = None
    image: Image | None = None
    password: NewPassword | None = None
    current_password: Password | None = None
    code: FactorCode | None = None  # with the password, for an account with a second factor


class ProfileDeleteIn(Body):
    password: Password
    code: FactorCode | None = None


class PhoneVerifyIn(Body):
    otp: Otp


class ReadUserJob(JobData):
    token: AccessToken


class UpdateUserJob(JobData):
    """An update, or with `phone_otp` (alone) the code that confirms a pending phone."""

    token: AccessToken
    name: NewName | None = None
    phone: Phone | None = None
    image: Image | None = None
    password: NewPassword | None = None
    current_password: Password | None = None
    code: FactorCode | None = None
    phone_otp: Otp | None = None


class DeleteUserJob(JobData):
    token: AccessToken
    password: Password
    code: FactorCode | None = None


class UserOut(Out):
    """The user as clients see it (`domain.users.public_view`): never the password hash; the
    phone in full, as only its owner is answered."""

    id: str
    name: str
    email: str
    phone: str | None
    image: str | None
    email_verified: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime


class UserData(Out):
    """The `data` of an answer about one user: profile read and update, sign-up verified."""

    user: UserOut


class PhonePendingData(UserData):
    """The `data` of a profile update that asked for a new phone: the user as they are (the
    phone unchanged until the code comes back), the new number masked, and the code's lifetime
    in seconds. The same whether or not the number is another account's."""

    phone_pending: str
    expires_in: int
