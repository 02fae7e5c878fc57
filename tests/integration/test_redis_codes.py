"""The Redis code store: atomic single use, try counting, expiry, and failing closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gatehouse.domain.codes import CodeCheck
from gatehouse.errors import Unavailable
from gatehouse.security.redis_codes import RedisCodeStore
from tests.conftest import free_port, unique

GOOD, BAD = "a" * 64, "b" * 64


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> RedisCodeStore:
    return RedisCodeStore(redis, prefix=unique("test:code") + ":")


async def test_right_code_is_accepted_once(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK
    assert await store.check("register", "subj", GOOD) is CodeCheck.MISSING


async def test_code_is_bound_to_its_purpose(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    assert await store.check("recovery", "subj", GOOD) is CodeCheck.MISSING
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK


async def test_five_wrong_tries_kill_the_code(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    results = [await store.check("register", "subj", BAD) for _ in range(5)]
    assert results == [CodeCheck.MISMATCH] * 4 + [CodeCheck.EXHAUSTED]
    assert await store.check("register", "subj", GOOD) is CodeCheck.MISSING


async def test_code_expires(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 1, 5)
    await asyncio.sleep(1.3)
    assert await store.check("register", "subj", GOOD) is CodeCheck.MISSING


async def test_restore_puts_back_a_consumed_code_but_never_overwrites(
    store: RedisCodeStore,
) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK
    await store.restore("register", "subj", GOOD, 60, 5)
    await store.put("register", "other", GOOD, 60, 5)
    await store.restore("register", "other", BAD, 60, 5)  # a newer code exists: kept
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK
    assert await store.check("register", "other", GOOD) is CodeCheck.OK


async def test_fifty_simultaneous_right_codes_succeed_exactly_once(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(10)]
    prefix = unique("test:race") + ":"
    stores = [RedisCodeStore(c, prefix=prefix) for c in clients]
    await stores[0].put("register", "subj", GOOD, 60, 5)
    results = await asyncio.gather(
        *(stores[i % 10].check("register", "subj", GOOD) for i in range(50))
    )
    for client in clients:
        await client.aclose()
    assert results.count(CodeCheck.OK) == 1
    assert results.count(CodeCheck.MISSING) == 49


async def test_concurrent_wrong_codes_are_all_counted(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    results = await asyncio.gather(*(store.check("register", "subj", BAD) for _ in range(20)))
    assert results.count(CodeCheck.MISMATCH) == 4
    assert results.count(CodeCheck.EXHAUSTED) == 1
    assert results.count(CodeCheck.MISSING) == 15


async def test_keys_hold_no_code_and_expire(store: RedisCodeStore, redis: Redis) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    keys = [k async for k in redis.scan_iter(match=f"{store._prefix}*")]
    assert len(keys) == 1
    assert 0 < await redis.ttl(keys[0]) <= 60
    assert await redis.hgetall(keys[0]) == {b"h": GOOD.encode(), b"a": b"5"}


async def test_redis_down_fails_closed() -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    store = RedisCodeStore(client)
    with pytest.raises(Unavailable):
        await store.put("register", "subj", GOOD, 60, 5)
    with pytest.raises(Unavailable):
        await store.check("register", "subj", GOOD)
    with pytest.raises(Unavailable):
        await store.ping()
    await client.aclose()


async def test_a_new_code_does_not_reset_the_wrong_try_count(store: RedisCodeStore) -> None:
    assert await store.put("register", "subj", GOOD, 60, 5) == 5
    for _ in range(3):
        assert await store.check("register", "subj", BAD) is CodeCheck.MISMATCH
    assert await store.put("register", "subj", GOOD, 60, 5) == 2  # three already spent
    assert await store.check("register", "subj", BAD) is CodeCheck.MISMATCH
    assert await store.check("register", "subj", BAD) is CodeCheck.EXHAUSTED
    assert await store.put("register", "subj", GOOD, 60, 5) == 0  # none left this window
    assert await store.check("register", "subj", GOOD) is CodeCheck.MISSING


async def test_the_right_code_clears_the_wrong_try_count(store: RedisCodeStore) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    await store.check("register", "subj", BAD)
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK
    assert await store.put("register", "subj", GOOD, 60, 5) == 5


async def test_a_receipt_lets_the_same_job_through_again_and_nobody_else(
    store: RedisCodeStore, redis: Redis
) -> None:
    """A job whose worker died after the check runs again; its receipt passes, others do not."""
    await store.put("register", "subj", GOOD, 60, 5)
    wrong = await store.check("register", "subj", BAD, receipt="r1", receipt_ttl_seconds=60)
    assert wrong is CodeCheck.MISMATCH  # a wrong code leaves no receipt
    assert await store.check("register", "subj", BAD, receipt="r1") is CodeCheck.MISMATCH
    ok = await store.check("register", "subj", GOOD, receipt="r1", receipt_ttl_seconds=60)
    assert ok is CodeCheck.OK
    assert await store.check("register", "subj", GOOD) is CodeCheck.MISSING
    assert await store.check("register", "subj", GOOD, receipt="r2") is CodeCheck.MISSING
    assert await store.check("recovery", "subj", GOOD, receipt="r1") is CodeCheck.MISSING
    await store.put("register", "subj", BAD, 60, 5)  # a newer code is not touched by the replay
    assert await store.check("register", "subj", GOOD, receipt="r1") is CodeCheck.OK
    assert await store.check("register", "subj", BAD) is CodeCheck.OK
    # It lives for the time given, under a key that names no person.
    keys = [k.decode() async for k in redis.scan_iter(match=f"{store._prefix}receipt:*")]
    assert keys == [f"{store._prefix}receipt:register:r1"]
    assert 0 < await redis.ttl(keys[0]) <= 60
