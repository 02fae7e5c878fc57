"""Password sign-in on the wire: the HTTP body and answer, and the `verify-user` job's data."""

from __future__ import annotations

from typing import Literal

from gatehouse.selfservice.fields import Body, Email, JobData, Password
from gatehouse.selfservice.profile.schemas import UserOut
from gatehouse.web.schemas import Out


class LoginIn(Body):
    email: Email
    password: Password


class VerifyUserJob(JobData):
    email: Email
    password: Password


class LoginData(Out):
    """The `data` of a sign-in, and of a refresh (a new pair for the same session): the access
    token, its lifetime in seconds, the refresh token and the user."""

    token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    user: UserOut
