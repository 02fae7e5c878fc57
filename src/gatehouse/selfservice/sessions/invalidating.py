"""Units of work that announce, around their commit, every change that could end a session or
alter its user, so no api process answers from a stale signed-in cache (`cache.py`).

The writes that matter are few and all pass through two repositories: `users.update` and
`users.delete` (a profile, a password, a phone, a disable), `sessions.revoke` and
`sessions.revoke_user` (a logout, a deleted session, a reuse detected, everything ended). They
are wrapped here, once, rather than announced by each flow, so a new flow cannot forget."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any

from gatehouse.domain.users import User
from gatehouse.errors import Unavailable
from gatehouse.ports import Sessions, UnitOfWork, Users
from gatehouse.ports.invalidation import Invalidations
from gatehouse.selfservice.sessions.cache import session_key, user_key

log = logging.getLogger(__name__)


class _Users:
    def __init__(self, inner: Users, changed: set[str]):
        self._inner, self._changed = inner, changed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def update(self, user: User) -> None:
        self._changed.add(user_key(user.id))
        await self._inner.update(user)

    async def delete(self, user_id: str) -> None:
        self._changed.add(user_key(user_id))
        await self._inner.delete(user_id)


class _Sessions:
    def __init__(self, inner: Sessions, changed: set[str]):
        self._inner, self._changed = inner, changed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool:
        self._changed.add(session_key(session_id))
        return await self._inner.revoke(session_id, now, reason)

    async def revoke_user(self, user_id: str, now: datetime, reason: str) -> int:
        self._changed.add(user_key(user_id))
        return await self._inner.revoke_user(user_id, now, reason)


class InvalidatingUnitOfWork:
    """A unit of work whose commit, when it changed a user or a session, is announced before
    (a failure then aborts it: `Unavailable`, nothing written) and after."""

    def __init__(self, inner: UnitOfWork, invalidations: Invalidations):
        self._inner, self._invalidations = inner, invalidations
        self._changed: set[str] = set()

    def __getattr__(self, name: str) -> Any:  # the other repositories, untouched
        return getattr(self._inner, name)

    @property
    def users(self) -> Users:
        return _Users(self._inner.users, self._changed)

    @property
    def sessions(self) -> Sessions:
        return _Sessions(self._inner.sessions, self._changed)

    async def __aenter__(self) -> UnitOfWork:
        entered = await self._inner.__aenter__()
        if entered is not self._inner:
            self._inner = entered
        return self  # structurally a UnitOfWork

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(et, e, tb)

    async def commit(self) -> None:
        if not self._changed:
            await self._inner.commit()
            return
        changed = set(self._changed)
        await self._invalidations.announce(changed, committed=False)
        await self._inner.commit()
        self._changed.clear()
        try:
            await self._invalidations.announce(changed, committed=True)
        except Unavailable:
            # Committed already: the caller gets its answer. No process stores these keys
            # again before the first announcement's hold runs out, by then from this commit.
            log.warning("invalidation after commit not sent: the hold covers it")


def invalidating_units(
    units: Callable[[], UnitOfWork], invalidations: Invalidations
) -> Callable[[], UnitOfWork]:
    def unit() -> UnitOfWork:
        return InvalidatingUnitOfWork(units(), invalidations)

    return unit
