"""What every flow receives: ports, keys and policy numbers, built once by bootstrap."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gatehouse.domain.crypto import Keyring, Secrets, keyed_hash
from gatehouse.domain.tokens import AccessTokens
from gatehouse.domain.users import User
from gatehouse.ports import (
    Clock,
    CodeStore,
    FailureCounter,
    Notifier,
    PasswordHasher,
    RateLimiter,
    UnitOfWork,
)
from gatehouse.ports.rotation import Rotations
from gatehouse.ports.signin import SessionOpenings
from gatehouse.ports.signup import SignUpFinishes
from gatehouse.selfservice.sessions.cache import SignedInCache


@dataclass(frozen=True)
class Policy:
    code_ttl: timedelta = timedelta(minutes=10)
    code_attempts: int = 5
    pending_ttl: timedelta = timedelta(hours=24)
    refresh_ttl: timedelta = timedelta(days=30)
    refresh_family_max: timedelta = timedelta(days=90)
    # How recently a session must have proved a factor to make a sensitive change without
    # giving its password again (DESIGN 3a, GATEHOUSE_STEP_UP_SECONDS).
    step_up: timedelta = timedelta(seconds=300)
    # Register, resend and forgot-password answer no sooner than this, whichever path they took
    # (new or existing account), so their timing tells nothing. Zero turns it off.
    answer_floor: timedelta = timedelta(0)


@dataclass(frozen=True)
class RelyingParty:
    """Who passkeys are made for (WebAuthn): the id their signatures are bound to (a domain),
    the name an authenticator shows, and the page origins a ceremony may come from
    (GATEHOUSE_PUBLIC_URL, GATEHOUSE_WEBAUTHN_*)."""

    id: str = "localhost"
    name: str = "Gatehouse"
    origins: tuple[str, ...] = ("http://localhost:8000",)


@dataclass(frozen=True)
class FlowContext:
    uow: Callable[[], UnitOfWork]
    codes: CodeStore
    hasher: PasswordHasher
    clock: Clock
    secrets: Secrets
    keyring: Keyring
    tokens: AccessTokens
    policy: Policy
    notifier: Notifier
    limiter: RateLimiter
    failures: FailureCounter
    # The common-password list (bootstrap loads the shipped one); empty means no list check.
    common_passwords: Container[str] = frozenset()
    # Units of work that only read (no transaction); None: `uow` serves reads too.
    read_uow: Callable[[], UnitOfWork] | None = None
    relying_party: RelyingParty = RelyingParty()
    # Signed-in users an api process holds between announcements (sessions/cache.py); None:
    # every authenticated read asks the database.
    signed_in: SignedInCache | None = None
    # A refresh written in one step where the database allows it (ports/rotation.py).
    rotations: Rotations | None = None
    # A verified sign-up written in one step where the database allows it (ports/signup.py).
    sign_ups: SignUpFinishes | None = None
    # A plain password sign-in written in one step where the database allows it (ports/signin.py).
    sign_ins: SessionOpenings | None = None

    def reader(self) -> UnitOfWork:
        """A unit of work for a flow that reads and never commits."""
        return (self.read_uow or self.uow)()

    def code_subject(self, purpose: str, identifier: str) -> str:
        """Codes are filed under an HMAC of the recipient: no emails or phones in Redis keys."""
        return keyed_hash(self.secrets.index_key, "code-subject", purpose, identifier)

    def code_hash(self, purpose: str, identifier: str, code: str) -> str:
        return keyed_hash(self.secrets.code_key, purpose, identifier, code)

    def code_receipt(self, purpose: str, identifier: str, code: str, holder: str) -> str:
        """What a job leaves when it spends a code (see `otp.consume_then`)."""
        return keyed_hash(self.secrets.code_key, "receipt", purpose, identifier, code, holder)

    def blind_index(self, field: str, value: str) -> str:
        return keyed_hash(self.secrets.index_key, "index", field, value)

    def phone_fields(self, phone: str | None) -> dict[str, Any]:
        """A (cleaned) phone as it is stored: its ciphertext bound to the field, and its blind
        index for uniqueness and lookup; both None for no phone. (Typed loosely: it is spread
        into a `User`, whose other fields, a pending phone's expiry, are not all strings.)"""
        if not phone:
            return {"phone_ciphertext": None, "phone_index": None}
        return {
            "phone_ciphertext": self.keyring.encrypt(phone, PHONE_CONTEXT),
            "phone_index": self.blind_index("phone", phone),
        }


PHONE_CONTEXT = "user.phone"


def phone_of(ctx: FlowContext, user: User) -> str | None:
    """The decrypted phone of a user (the ciphertext is bound to its field)."""
    if user.phone_ciphertext is None:
        return None
    return ctx.keyring.decrypt(user.phone_ciphertext, PHONE_CONTEXT)
