"""The profile on the wire: the HTTP bodies and the `read-user`, `update-user` and `delete-user`
jobs' data."""

from __future__ import annotations

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
