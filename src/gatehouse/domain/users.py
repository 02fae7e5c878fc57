"""Users and pending registrations, and the rules on their fields."""

from __future__ import annotations

import unicodedata
from collections.abc import Container
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

PASSWORD_MIN = 8
# NIST 800-63B-4 asks for at least 64; a generous cap bounds hashing cost per request.
PASSWORD_MAX = 256
NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str
    created_at: datetime
    updated_at: datetime
    phone_ciphertext: str | None = None
    phone_index: str | None = None
    image: str | None = None
    email_verified_at: datetime | None = None
    # A new phone waiting for its code (DESIGN 3a), sealed and indexed as the phone is. Until the
    # code comes back it is no channel of the account: recovery and sign-in use `phone_*` only.
    pending_phone_ciphertext: str | None = None
    pending_phone_index: str | None = None
    pending_phone_expires_at: datetime | None = None
    # Set by an operator: the account exists (its email stays taken) but nothing signs it in.
    disabled_at: datetime | None = None

    def with_changes(self, **changes: Any) -> User:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class PendingRegistration:
    """A sign-up waiting for its email code; becomes a `User` (same id) once verified."""

    id: str
    email: str
    name: str
    password_hash: str
    created_at: datetime
    expires_at: datetime
    phone_ciphertext: str | None = None
    phone_index: str | None = None


# The `password_hash` of an account (or a sign-up) that no password opens: no hash format starts
# with "!", so every check against it fails, in the time a real check takes (security/hashing.py).
# A contested sign-up's account starts so; its owner sets a password through recovery.
NO_PASSWORD = "!no-password"  # noqa: S105 - a marker no password matches


def has_password(password_hash: str) -> bool:
    """Whether some password can open this hash (False for `NO_PASSWORD`)."""
    return not password_hash.startswith("!")


def normalize_email(email: str) -> str:
    """Case-fold the domain and the local part: one mailbox, one account, whatever the casing."""
    return email.strip().lower()


def normalize_password(password: str) -> str:
    """NFKC so the same password typed on different keyboards hashes the same (800-63B-4)."""
    return unicodedata.normalize("NFKC", password)


def password_problem(password: str, common: Container[str] = frozenset()) -> str | None:
    """Why a new password is refused, or None. Length is counted in code points after NFKC; the
    whole password (case-folded) must not be in the list of common ones. No composition rules:
    NIST 800-63B-4 found they make passwords worse, not stronger."""
    normalized = normalize_password(password)
    if len(normalized) < PASSWORD_MIN:
        return f"Password must be at least {PASSWORD_MIN} characters"
    if len(normalized) > PASSWORD_MAX:
        return f"Password must be at most {PASSWORD_MAX} characters"
    if normalized.lower() in common:
        return "This password is one of the most common ones; choose another"
    return None


def clean_name(name: str) -> str | None:
    """A display name without control characters (no CR/LF header injection), or None if invalid."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name or len(name) > NAME_MAX:
        return None
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return None
    return name


def mask_phone(phone: str) -> str:
    """`+1415•••0123`: enough to recognise, not enough to use."""
    return phone[:5] + "\u2022" * 3 + phone[-4:] if len(phone) > 9 else "\u2022" * 6


def public_view(user: User, phone: str | None, *, reveal_phone: bool = True) -> dict[str, Any]:
    """The user as clients see it: never the hash; the phone (decrypted by the caller) in full
    only where the owner asks for their profile, masked in every other answer."""
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "phone": phone if reveal_phone or phone is None else mask_phone(phone),
        "image": user.image,
        "email_verified": user.email_verified_at is not None,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }
