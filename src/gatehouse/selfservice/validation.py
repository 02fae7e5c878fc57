"""Field rules shared by the flows, raising `InvalidInput` with per-field errors."""

from __future__ import annotations

import re
from collections.abc import Container

from gatehouse.domain.users import clean_name, password_problem
from gatehouse.errors import InvalidInput

# E.164: a plus, a country code and up to 15 digits in all.
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[{"field": field, "message": message}])


def require_name(name: str) -> str:
    cleaned = clean_name(name)
    if cleaned is None:
        raise _invalid("name", "Name must be 1 to 200 printable characters")
    return cleaned


def require_password(
    password: str, field: str = "password", common: Container[str] = frozenset()
) -> None:
    problem = password_problem(password, common)
    if problem:
        raise _invalid(field, problem)


def require_phone(phone: str | None) -> str | None:
    if phone is None or phone == "":
        return None
    compact = re.sub(r"[\s\-().]", "", phone)
    if not _E164.match(compact):
        raise _invalid("phone", "Phone must be in international format, e.g. +14155550123")
    return compact


def require_image(image: str) -> str | None:
    """An http(s) URL of at most 2048 characters, or "" to remove the image."""
    if image == "":
        return None
    if len(image) > 2048 or not re.match(r"^https?://[^\s/$.?#][^\s]*$", image):
        raise _invalid("image", "Image must be an http(s) URL of at most 2048 characters")
    return image
