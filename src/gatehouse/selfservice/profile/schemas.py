"""The profile on the wire: HTTP bodies and answers (the user), and the *-user jobs' data."""

from __future__ import annotations

from pydantic import AwareDatetime

from gatehouse.selfservice.fields import (
    AccessToken,
    Body,
    Image,
    JobData,
    NewName,
    NewPassword,
    Password,
    Phone,
)
from gatehouse.web.schemas import Out


class ProfileUpdateIn(Body):
    name: NewName | None = None
    phone: Phone | None = None
    image: Image | None = None
    password: NewPassword | None = None
    current_password: Password | None = None


class ProfileDeleteIn(Body):
    password: Password


class ReadUserJob(JobData):
    token: AccessToken


class UpdateUserJob(JobData):
    token: AccessToken
    name: NewName | None = None
    phone: Phone | None = None
    image: Image | None = None
    password: NewPassword | None = None
    current_password: Password | None = None


class DeleteUserJob(JobData):
    token: AccessToken
    password: Password


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
