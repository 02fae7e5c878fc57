"""Password sign-in on the wire: the HTTP body and the `verify-user` job's data."""

from __future__ import annotations

from gatehouse.selfservice.fields import Body, Email, JobData, Password


class LoginIn(Body):
    email: Email
    password: Password


class VerifyUserJob(JobData):
    email: Email
    password: Password
