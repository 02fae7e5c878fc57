"""One-time codes: generation, purposes and the outcome of a check."""

from __future__ import annotations

import enum
import secrets

CODE_DIGITS = 6
# Wrong tries are also counted per recipient for this long, across codes: asking for a new code
# does not buy five more guesses.
FAILURE_WINDOW_SECONDS = 3600


class Purpose(enum.StrEnum):
    """A code is bound to what it was sent for; a registration code cannot reset a password."""

    REGISTER = "register"
    RECOVERY = "recovery"
    VERIFY = "verify"
    PHONE = "phone"  # a new phone number's code, bound to that pending number


class CodeCheck(enum.StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    MISSING = "missing"  # never issued, expired, already used
    EXHAUSTED = "exhausted"  # too many wrong tries: the code is dead


def generate_code() -> str:
    """Six uniformly random digits from the OS CSPRNG."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def looks_like_code(value: str) -> bool:
    return len(value) == CODE_DIGITS and value.isascii() and value.isdigit()
