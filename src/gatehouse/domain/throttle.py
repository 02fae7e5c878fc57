"""How long a login must wait after failures, and how OTP sends are bucketed against pumping."""

from __future__ import annotations

import math

FREE_FAILURES = 5  # typos happen: the first failures cost nothing
LOCK_AFTER = 30  # then the account answers only after the window (or a password reset)
MAX_WAIT_SECONDS = 15 * 60
FAILURE_WINDOW_SECONDS = 12 * 3600  # failures are forgotten this long after the last one

# E.164 country codes are prefix-free: 1 and 7 are one digit, these are two, the rest three.
_TWO_DIGIT_CODES = frozenset(
    {20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54}
    | {55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98}
)


def login_wait(failures: int, last_failure: float, now: float) -> int:
    """Seconds before the next login attempt may be judged (0: go ahead).

    After the free failures each one doubles the wait from 1 minute up to 15; from the 30th the
    account waits out the whole window, which brute force across 12 hours cannot beat."""
    if failures < FREE_FAILURES:
        return 0
    if failures >= LOCK_AFTER:
        wait = FAILURE_WINDOW_SECONDS
    else:
        wait = min(MAX_WAIT_SECONDS, 60 * 2 ** (failures - FREE_FAILURES))
    return max(0, math.ceil(last_failure + wait - now))


def country_prefix(e164: str) -> str:
    """`+44…` → `+44`: SMS sends are also limited per destination country."""
    digits = e164.lstrip("+")
    if digits[:1] in ("1", "7"):
        return "+" + digits[:1]
    if digits[:2].isdigit() and int(digits[:2]) in _TWO_DIGIT_CODES:
        return "+" + digits[:2]
    return "+" + digits[:3]
