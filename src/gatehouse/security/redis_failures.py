"""Failed-login counters in Redis, shared by every api and worker process."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gatehouse.errors import Unavailable


class RedisFailureCounter:
    def __init__(self, redis: Redis, prefix: str = "gatehouse:fail:"):
        self._redis = redis
        self._prefix = prefix  # keys end in an HMAC chosen by the flow: no address in clear

    async def get(self, key: str, now: float) -> tuple[int, float]:
        # Redis expires the entry a window after the last failure: `now` is not needed here.
        try:
            values = await self._redis.hmget(self._prefix + key, ["n", "t"])
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis unavailable") from exc
        count, last = values
        return (int(count), float(last)) if count is not None and last is not None else (0, 0.0)

    async def add(self, key: str, now: float, window_seconds: int) -> int:
        name = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(name, "n", 1)
                pipe.hset(name, "t", repr(now))
                pipe.expire(name, window_seconds)
                count, _, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis unavailable") from exc
        return int(count)

    async def clear(self, key: str) -> None:
        try:
            await self._redis.delete(self._prefix + key)
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis unavailable") from exc
