"""Embedded code store and failure counter: `gatehouse serve` without Redis."""

from __future__ import annotations

import time

from gatehouse.domain.codes import FAILURE_WINDOW_SECONDS, CodeCheck
from gatehouse.domain.crypto import same

# The fewest code and wrong-try entries a sweep waits for: below this, a dict of expired entries
# costs less than sweeping it often.
SWEEP_FLOOR = 1024


class MemoryCodeStore:
    """Codes in a dict with monotonic expiry; the event loop makes each check atomic. Wrong tries
    are also counted per subject across codes, for the failure window.

    A subject that never comes back would leave its expired code or wrong-try count behind for
    good, so a long-running `serve` sweeps them: whenever the two dicts together have grown to
    twice what the last sweep left (and at least `SWEEP_FLOOR`), every expired entry goes. A
    sweep of n entries follows at least n/2 additions, so it costs O(1) per operation amortised,
    and the dicts stay within twice the entries live at the last sweep (or the floor)."""

    def __init__(self) -> None:
        # (purpose, subject) -> (HMAC, tries left, deadline, binding)
        self._codes: dict[tuple[str, str], tuple[str, int, float, str]] = {}
        self._fails: dict[tuple[str, str], tuple[int, float]] = {}
        self._receipts: dict[tuple[str, str], float] = {}  # (purpose, receipt) -> deadline
        self._sweep_at = SWEEP_FLOOR  # the number of entries held that triggers a sweep

    def _entries(self) -> int:
        """How many codes, wrong-try counts and receipts are held, expired ones included."""
        return len(self._codes) + len(self._fails) + len(self._receipts)

    def _grown(self) -> None:
        """Called after an entry is added: sweeps when the dicts have doubled since the last
        sweep. Synchronous, like every operation here, so no check sees half a sweep."""
        if self._entries() < self._sweep_at:
            return
        now = time.monotonic()
        # The same tests as `_live` and `_recent_fails`: what goes was already treated as gone.
        # Rebuilt, not deleted from: a dict keeps its table's size after deletions.
        self._codes = {k: e for k, e in self._codes.items() if e[2] > now}
        self._fails = {k: e for k, e in self._fails.items() if e[1] > now}
        self._receipts = {k: deadline for k, deadline in self._receipts.items() if deadline > now}
        self._sweep_at = max(SWEEP_FLOOR, 2 * self._entries())

    def _recent_fails(self, key: tuple[str, str]) -> int:
        count, until = self._fails.get(key, (0, 0.0))
        return count if until > time.monotonic() else 0

    async def put(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> int:
        key = (purpose, subject)
        left = attempts - self._recent_fails(key)
        self._codes.pop(key, None)
        if left <= 0:
            return 0
        self._codes[key] = (code_hash, left, time.monotonic() + ttl_seconds, binding)
        self._grown()
        return left

    async def binding(self, purpose: str, subject: str) -> str | None:
        entry = self._live((purpose, subject))
        return "" if entry is None else entry[3]

    def _live(self, key: tuple[str, str]) -> tuple[str, int, float, str] | None:
        """The subject's code unless it has expired (an expired one is forgotten here)."""
        entry = self._codes.get(key)
        if entry is not None and entry[2] <= time.monotonic():
            del self._codes[key]
            return None
        return entry

    async def restore(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> None:
        key = (purpose, subject)
        if self._live(key) is None:  # never over a live code; an expired one is no code
            self._codes[key] = (code_hash, attempts, time.monotonic() + ttl_seconds, binding)
            self._grown()

    async def check(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        *,
        receipt: str | None = None,
        receipt_ttl_seconds: int = 0,
    ) -> CodeCheck:
        now = time.monotonic()
        if receipt and self._receipts.get((purpose, receipt), 0.0) > now:
            return CodeCheck.OK  # the same job presenting the same code again
        key = (purpose, subject)
        entry = self._live(key)
        if entry is None:
            return CodeCheck.MISSING
        stored, attempts, deadline, binding = entry
        if same(stored, code_hash):
            del self._codes[key]
            self._fails.pop(key, None)
            if receipt and receipt_ttl_seconds > 0:
                self._receipts[(purpose, receipt)] = now + receipt_ttl_seconds
                self._grown()
            return CodeCheck.OK
        self._fails[key] = (
            self._recent_fails(key) + 1,
            time.monotonic() + FAILURE_WINDOW_SECONDS,
        )
        if attempts <= 1:
            del self._codes[key]
            self._grown()  # a wrong-try count may have been added
            return CodeCheck.EXHAUSTED
        self._codes[key] = (stored, attempts - 1, deadline, binding)
        self._grown()
        return CodeCheck.MISMATCH

    async def ping(self) -> None:
        return None


class MemoryFailureCounter:
    """Failure counts in a dict; each entry is forgotten `window` seconds after its last failure.
    Keys that never come back are swept as the code store's are (amortised, bounded)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, float, float]] = {}
        self._sweep_at = SWEEP_FLOOR

    async def get(self, key: str, now: float) -> tuple[int, float]:
        entry = self._entries.get(key)
        if entry is None or entry[2] <= now:
            self._entries.pop(key, None)
            return 0, 0.0
        return entry[0], entry[1]

    async def add(self, key: str, now: float, window_seconds: int) -> int:
        count, _last = await self.get(key, now)
        self._entries[key] = (count + 1, now, now + window_seconds)
        if len(self._entries) >= self._sweep_at:
            self._entries = {k: e for k, e in self._entries.items() if e[2] > now}
            self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._entries))
        return count + 1

    async def clear(self, key: str) -> None:
        self._entries.pop(key, None)
