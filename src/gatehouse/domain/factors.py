"""Second factors (DESIGN 3b): authenticator apps (TOTP, RFC 6238), passkeys (WebAuthn) and
recovery codes, as stored, and the pure rules that check them.

TOTP is SHA-1, 6 digits, 30-second steps, one step of drift either way; a step, once accepted,
never is again (`last_step`), so a code seen over a shoulder is worth nothing after its use.
Recovery codes are 10 random codes of 50 bits each, stored as keyed hashes (high entropy: a fast
hash is enough) and spent once."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp

from gatehouse.domain.crypto import keyed_hash

TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_DRIFT = 1  # steps either way: a phone's clock a little off still works
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed back
_RECOVERY_LENGTH = 10  # 31**10 ~ 2**49.5

# RFC 8176 method references and NIST assurance levels a session may carry.
OTP = "otp"
HWK = "hwk"
USER = "user"  # user presence and verification on the device (a passkey's PIN or biometric)
MFA = "mfa"
AAL2 = 2


@dataclass(frozen=True, slots=True)
class TotpFactor:
    """An account's authenticator app; `confirmed_at` None while being set up."""

    user_id: str
    secret_ciphertext: str  # the base32 secret, encrypted under the data keyring
    created_at: datetime
    confirmed_at: datetime | None = None
    last_step: int = 0  # the newest time step accepted: it and older ones are refused


@dataclass(frozen=True, slots=True)
class Passkey:
    """A WebAuthn credential. `credential_id` and `public_key` are base64url; `id` is ours."""

    id: str
    user_id: str
    credential_id: str
    public_key: str
    sign_count: int
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    transports: str = ""  # comma-separated hints the browser gave at registration


TOTP_CONTEXT = "user.totp_secret"  # associated data of the secret's ciphertext


def new_totp_secret() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, RFC 4226's recommended length


def otpauth_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def step_at(moment: datetime) -> int:
    return int(moment.timestamp()) // TOTP_STEP


def matching_step(secret: str, code: str, now: datetime, after: int) -> int | None:
    """The time step whose code `code` is, within the drift around `now` and newer than `after`
    (the last one accepted); None when none is. Every candidate is compared in constant time."""
    clean = "".join(code.split())
    if len(clean) != TOTP_DIGITS or not clean.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP)
    current = step_at(now)
    found = None
    for step in range(current - TOTP_DRIFT, current + TOTP_DRIFT + 1):
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected, clean) and step > after and found is None:
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Ten codes as the user sees them: `xxxxx-xxxxx`."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    """What a user types back: any case, with or without the dash and spaces."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def recovery_code_hash(key: bytes, user_id: str, code: str) -> str:
    """Bound to its account: a code of one account is no code of another."""
    return keyed_hash(key, "recovery-code", user_id, normalize_recovery_code(code))


def amr_with(first: tuple[str, ...], second: str) -> tuple[str, ...]:
    """The methods of a sign-in completed with a second factor (`mfa`: more than one)."""
    return (*first, second, MFA)
