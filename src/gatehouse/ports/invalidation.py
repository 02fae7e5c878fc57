"""The channel that keeps every api process's signed-in cache true (`selfservice/sessions/
cache.py`), as a port: Redis publish/subscribe in `realtime/invalidations.py`."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class Invalidations(Protocol):
    async def announce(self, keys: Collection[str], *, committed: bool) -> None:
        """Tell every api process that what `keys` name (`u:<user id>`, `s:<session id>`) is
        changing (`committed` False: before the transaction commits) or changed (True).
        Raises `errors.Unavailable` when it cannot be sent: before a commit, the change is
        then not made."""
