"""The wire fields every door shares: one limit for one field, whether it comes over HTTP, in a
job or on the command line. Unknown fields are refused over HTTP and ignored in jobs (producers
such as the seed services send extra ones); either way `role` or `is_admin` never reach a flow."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidatorFunctionWrapHandler
from pydantic.functional_validators import WrapValidator

from gatehouse.domain.users import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN

# An address whose local part is a plain ASCII dot-atom (RFC 5322 3.2.3), which email_validator
# always accepts as it is, so only its domain needs that library's checks.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@([A-Za-z0-9.-]+)")
_LOCAL_MAX, _ADDRESS_MAX = 64, 254


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The domain as email_validator writes it, or None when it refuses it."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def _plain_email(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """EmailStr's answer, without its 58 us an address (7 % of a verify-otp's CPU in the api)
    for the usual one: a plain local part, and a domain checked once per domain (cached).
    Anything else, and anything refused, is EmailStr's own, errors included."""
    if isinstance(value, str) and len(value) <= _ADDRESS_MAX:
        found = _PLAIN.fullmatch(value)
        if found is not None and _plain(found[1], found[2]):
            domain = _domain(found[2])
            if domain is not None and len(found[1]) + 1 + len(domain) <= _ADDRESS_MAX:
                return f"{found[1]}@{domain}"
    return handler(value)


def _plain(local: str, domain: str) -> bool:
    """Whether email_validator writes the address as it came but for the domain's case: not
    for a mailbox name it lowercases (postmaster, abuse...), nor for an IDNA domain, which it
    writes in Unicode (longer in UTF-8 than it came: its length check is on that)."""
    return (
        len(local) <= _LOCAL_MAX
        and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES
        and "xn--" not in domain.lower()
    )


Email = Annotated[EmailStr, WrapValidator(_plain_email)]
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
