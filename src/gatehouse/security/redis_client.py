"""The processes' redis-py client (rate limits, failure counts, invalidations, and the code store
where its pipelined connection cannot go)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

# Connections a process opens at most; more calls at once wait for one.
MAX_CONNECTIONS = 100


def redis_client(url: str) -> Redis:
    """redis-py's client for `url`, on a pool where a burst waits (up to 5 s) for a free
    connection. redis-py's own pool refuses the 101st call in flight ("Too many connections"):
    a burst of sign-ins or code checks answered 503 while Redis was well."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=5, health_check_interval=30
    )
    return Redis.from_pool(pool)
