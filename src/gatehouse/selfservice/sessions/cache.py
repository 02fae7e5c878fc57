"""Signed-in users held in an api process, so a profile read need not ask the database whether
its session is alive: trusted only while the invalidation channel is heard (fail closed).

Every change that could end a session or alter its user (logout, session deletion, password
change, admin disable or delete, profile update) is announced on a channel every api process
listens to (`Invalidations`), twice: before its transaction commits (`hold`: the entries go, and
none is stored again for the key until the second announcement or `hold_seconds`), and after it
committed (`release`). So no process keeps, or stores again, what a committed change made stale,
even when an announcement is lost after the commit. A change whose first announcement cannot be
made does not commit (`selfservice/sessions/invalidating.py`).

Fail closed: the cache answers only while something was heard on the channel (a heartbeat at
least) within `stale_after` seconds; a gap longer than that empties it, since announcements may
have been missed. A process that never listens (the worker, the command line) never uses it.
A read that raced with any announcement is not stored (`ticket`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gatehouse.domain.users import User

USER = "u:"  # key of every entry of a user
SESSION = "s:"  # key of one session's entry


def user_key(user_id: str) -> str:
    return USER + user_id


def session_key(session_id: str) -> str:
    return SESSION + session_id


@dataclass
class _Entry:
    user: User
    stored_at: float


@dataclass
class SignedInCache:
    """Session id -> its live user, for `ttl_seconds` at most (a bound on the damage of a bug,
    not what keeps it correct: the announcements do)."""

    ttl_seconds: float = 30.0
    stale_after: float = 1.5
    hold_seconds: float = 15.0
    max_entries: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _by_user: dict[str, set[str]] = field(default_factory=dict)
    _held: dict[str, float] = field(default_factory=dict)
    _generation: int = 0
    _heard_at: float = float("-inf")

    # -- the read path -------------------------------------------------------------------
    def live(self, now: float | None = None) -> bool:
        """Whether the channel was heard lately (at `now`, read from the clock if not given)."""
        return (self.clock() if now is None else now) - self._heard_at <= self.stale_after

    def get(self, session_id: str, user_id: str) -> User | None:
        entry = self._entries.get(session_id)
        if entry is None or entry.user.id != user_id:
            return None
        now = self.clock()
        if not self.live(now) or now - entry.stored_at > self.ttl_seconds:
            return None
        return entry.user

    def ticket(self) -> int:
        """Taken before a database read; `put` with it stores nothing if anything was
        announced in between."""
        return self._generation

    def put(self, ticket: int, session_id: str, user: User) -> None:
        now = self.clock()
        if ticket != self._generation or not self.live(now):
            return
        if self._is_held(user_key(user.id), now) or self._is_held(session_key(session_id), now):
            return
        if len(self._entries) >= self.max_entries:
            self._forget(next(iter(self._entries)))  # the oldest
        self._entries[session_id] = _Entry(user, now)
        self._by_user.setdefault(user.id, set()).add(session_id)

    # -- the channel ---------------------------------------------------------------------
    def heard(self) -> None:
        """Something arrived on the channel: a gap longer than `stale_after` may have lost
        announcements, so what was kept goes."""
        now = self.clock()
        if now - self._heard_at > self.stale_after:
            self.clear()
        self._heard_at = now

    def lost(self) -> None:
        """The channel is down: nothing is answered or stored until it is heard again."""
        self._heard_at = float("-inf")
        self.clear()

    def hold(self, keys: Iterable[str]) -> None:
        self.heard()
        until = self.clock() + self.hold_seconds
        for key in keys:
            self._drop(key)
            self._held[key] = until
        self._generation += 1

    def release(self, keys: Iterable[str]) -> None:
        self.heard()
        for key in keys:
            self._drop(key)
            self._held.pop(key, None)
        self._generation += 1

    def clear(self) -> None:
        self._entries.clear()
        self._by_user.clear()
        self._generation += 1

    def __len__(self) -> int:
        return len(self._entries)

    # -- inside --------------------------------------------------------------------------
    def _is_held(self, key: str, now: float) -> bool:
        until = self._held.get(key)
        if until is None:
            return False
        if until <= now:
            del self._held[key]
            return False
        return True

    def _drop(self, key: str) -> None:
        if key.startswith(USER):
            for session_id in self._by_user.pop(key[len(USER) :], set()):
                self._entries.pop(session_id, None)
        elif key.startswith(SESSION):
            self._forget(key[len(SESSION) :])

    def _forget(self, session_id: str) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            sessions = self._by_user.get(entry.user.id)
            if sessions is not None:
                sessions.discard(session_id)
                if not sessions:
                    del self._by_user[entry.user.id]
