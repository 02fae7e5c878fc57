"""`ports.RateLimiter` (`LimitsRateLimiter`) on the two storages of the `limits` library: in
memory (embedded) and in Redis (shared by every process). Same moving windows, same waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gatehouse.security.ratelimit import LimitsRateLimiter

Limiter = Callable[[dict[str, str]], LimitsRateLimiter]


async def test_a_key_over_its_limit_is_told_how_long_to_wait(limiter: Limiter) -> None:
    limits = limiter({"login": "3/minute", "none": ""})
    assert [await limits.hit("login", "ada") for _ in range(3)] == [None, None, None]
    wait = await limits.hit("login", "ada")
    assert wait is not None and 55 <= wait <= 60
    assert await limits.hit("login", "bob") is None  # per key
    assert await limits.hit("none", "ada") is None  # a rule without limits
    assert await limits.hit("unknown", "ada") is None


async def test_every_limit_of_a_rule_counts(limiter: Limiter) -> None:
    limits = limiter({"code": "5/minute;2/hour"})
    assert [await limits.hit("code", "ada") for _ in range(2)] == [None, None]
    wait = await limits.hit("code", "ada")
    assert wait is not None and 3500 < wait <= 3600  # the hour's limit, not the minute's


async def test_after_the_wait_the_key_is_let_through_again(limiter: Limiter) -> None:
    limits = limiter({"burst": "2/second"})
    assert [await limits.hit("burst", "ada") for _ in range(2)] == [None, None]
    wait = await limits.hit("burst", "ada")
    assert wait == 1
    await asyncio.sleep(wait + 0.05)
    assert await limits.hit("burst", "ada") is None
