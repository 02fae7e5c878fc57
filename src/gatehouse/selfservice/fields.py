"""The wire fields every door shares: one limit for one field, whether it comes over HTTP, in a
job or on the command line. Unknown fields are refused over HTTP and ignored in jobs (producers
such as the seed services send extra ones); either way `role` or `is_admin` never reach a flow."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from gatehouse.domain.users import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN

Email = EmailStr
# A password presented to be checked: anything a user may once have set, bounded.
Password = Annotated[str, Field(min_length=1, max_length=1024)]
# A password being set: the policy's bounds, so the schema says what the server accepts.
NewPassword = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
NewName = Annotated[str, Field(max_length=NAME_MAX)]
Phone = Annotated[str, Field(max_length=32)]
Image = Annotated[str, Field(max_length=2048)]
Otp = Annotated[str, Field(min_length=1, max_length=16)]
# A second factor's code in a step-up: a TOTP code or a recovery code.
FactorCode = Annotated[str, Field(min_length=1, max_length=64)]
RefreshToken = Annotated[str, Field(min_length=1, max_length=512)]
AccessToken = Annotated[str, Field(min_length=1, max_length=4096)]
Channel = Literal["email", "sms", "whatsapp"]
Room = Annotated[str, Field(max_length=200)]


class Body(BaseModel):
    """An HTTP request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class JobData(BaseModel):
    """A job's data: unknown fields are ignored; `notify` names the Socket.IO room of the result."""

    model_config = ConfigDict(extra="ignore", strict=True)

    notify: Room | None = None
