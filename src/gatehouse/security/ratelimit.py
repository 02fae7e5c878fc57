"""Rate limits with the `limits` library: moving windows in Redis (shared by every process) or in
memory (embedded). Fails closed: if Redis cannot be asked, the request is refused with 503."""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from gatehouse.errors import Unavailable


class LimitsRateLimiter:
    """`rules` maps a rule name to a limits string such as `"5/minute;20/hour"`."""

    def __init__(
        self,
        rules: dict[str, str],
        redis_url: str = "",
        prefix: str = "gatehouse:rl",
        pool: Any = None,
    ):
        storage: Storage
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            # Sharing the service's connection pool: one set of connections, closed with it.
            extra = {"connection_pool": pool} if pool is not None else {}
            storage = RedisStorage(uri, implementation="redispy", key_prefix=prefix, **extra)
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._rules: dict[str, list[RateLimitItem]] = {
            name: parse_many(spec) for name, spec in rules.items() if spec
        }

    async def hit(self, rule: str, key: str) -> int | None:
        """Count one request for `key` under `rule`; the seconds to wait if over a limit, else
        None. Keys are HMACs chosen by the caller: no address or IP is stored in clear."""
        items = self._rules.get(rule)
        if not items:
            return None
        try:
            for item in items:
                if not await self._limiter.hit(item, rule, key):
                    stats = await self._limiter.get_window_stats(item, rule, key)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # the storage is down: refuse rather than let floods through
            raise Unavailable("Rate limiter unavailable") from exc
        return None

    async def reset(self) -> None:
        await self._storage.reset()
