"""What only the Redis code store has: keys that hold no code and name no person, each with its
expiry, and failing closed when Redis is away. (What every code store does, this one included, is
in tests/contract/test_code_store.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gatehouse.domain.codes import CodeCheck
from gatehouse.errors import Unavailable
from gatehouse.jobs.redis_pipeline import PipelinedRedis
from gatehouse.security.redis_client import redis_client
from gatehouse.security.redis_codes import RedisCodeStore
from tests.conftest import free_port, unique

GOOD = "a" * 64


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = redis_client(redis_url)  # as the processes make it
    yield client
    await client.aclose()


@pytest.fixture(params=["redis-py", "pipelined"])
async def store(
    redis: Redis, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[RedisCodeStore]:
    """Both of the store's ways to Redis: redis-py's client (TLS, unix sockets) and the
    pipelined connection `bootstrap.build` gives it on plain TCP."""
    prefix = unique("test:code") + ":"
    if request.param == "redis-py":
        yield RedisCodeStore(redis, prefix=prefix)
        return
    made = RedisCodeStore.connected(redis, redis_url, prefix)  # coalescing, as processes run it
    assert made._pipe is not None
    yield made
    await made.aclose()


async def test_keys_hold_no_code_and_expire(store: RedisCodeStore, redis: Redis) -> None:
    await store.put("register", "subj", GOOD, 60, 5, "signup-id")
    keys = [k async for k in redis.scan_iter(match=f"{store._prefix}*")]
    assert len(keys) == 1
    assert 0 < await redis.ttl(keys[0]) <= 60
    held = {b"h": GOOD.encode(), b"a": b"5", b"b": b"signup-id"}
    assert await redis.hgetall(keys[0]) == held


async def test_a_code_stored_before_codes_kept_their_binding_still_checks(
    store: RedisCodeStore, redis: Redis
) -> None:
    """A code an earlier release stored (no `b`) while a new one is deployed: its binding is
    unknown (None: the flow reads its sign-up instead), and the code checks as before."""
    key = store._key("register", "subj")
    await redis.hset(key, mapping={"h": GOOD, "a": 5})
    await redis.expire(key, 60)
    assert await store.binding("register", "subj") is None
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK


async def test_a_receipt_is_a_key_that_names_no_person_and_expires(
    store: RedisCodeStore, redis: Redis
) -> None:
    await store.put("register", "subj", GOOD, 60, 5)
    ok = await store.check("register", "subj", GOOD, receipt="r1", receipt_ttl_seconds=60)
    assert ok is CodeCheck.OK
    keys = [k.decode() async for k in redis.scan_iter(match=f"{store._prefix}receipt:*")]
    assert keys == [f"{store._prefix}receipt:register:r1"]
    assert 0 < await redis.ttl(keys[0]) <= 60


@pytest.mark.parametrize("pipelined", [False, True])
async def test_redis_down_fails_closed(pipelined: bool) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = Redis.from_url(url, socket_connect_timeout=1)
    # The pipe tries to connect for half a second, then fails every caller waiting, at once.
    pipe = PipelinedRedis(url, timeout=0.5, coalesce=True) if pipelined else None
    store = RedisCodeStore(client, pipe=pipe)
    checks = await asyncio.gather(
        *(store.check("register", f"subj-{i}", GOOD) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(c, Unavailable) for c in checks)
    with pytest.raises(Unavailable):
        await store.put("register", "subj", GOOD, 60, 5)
    with pytest.raises(Unavailable):
        await store.binding("register", "subj")
    with pytest.raises(Unavailable):
        await store.restore("register", "subj", GOOD, 60, 5)
    with pytest.raises(Unavailable):
        await store.ping()
    await store.aclose()
    await client.aclose()


async def test_the_pipelined_connection_comes_back_after_redis_drops_it(
    redis: Redis, redis_url: str
) -> None:
    name = unique("codes")
    pipe = PipelinedRedis(redis_url, timeout=5.0, name=name, coalesce=True)
    store = RedisCodeStore(redis, prefix=unique("test:code") + ":", pipe=pipe)
    await store.put("register", "subj", GOOD, 60, 5, "signup-id")
    ids = [c["id"] for c in await redis.client_list() if c.get("name") == name]
    assert len(ids) == 1  # the pipe's connection, and only it, is dropped
    assert await redis.client_kill_filter(_id=ids[0]) == 1
    # The first call after may meet the dead connection (a 503) or a new one; none is lost:
    # the next one is served on a fresh connection and finds the code where it was.
    with contextlib.suppress(Unavailable):
        await store.binding("register", "subj")
    assert await store.binding("register", "subj") == "signup-id"
    assert await store.check("register", "subj", GOOD) is CodeCheck.OK
    await pipe.aclose()


async def test_concurrent_checks_each_get_their_own_answer(store: RedisCodeStore) -> None:
    # An attacker's check answered with someone else's OK would take that account: hundreds of
    # checks in flight at once, right and wrong mixed, each answered for its own code alone.
    subjects = [f"subj-{i}" for i in range(300)]
    for i, subject in enumerate(subjects):
        await store.put("register", subject, f"{i:064d}", 60, 5, f"signup-{i}")
    right = {s for i, s in enumerate(subjects) if i % 3 == 0}
    tried = [(i, s, f"{i:064d}" if s in right else "f" * 64) for i, s in enumerate(subjects)]
    random.shuffle(tried)
    bindings = await asyncio.gather(*(store.binding("register", s) for _, s, _ in tried))
    results = await asyncio.gather(*(store.check("register", s, h) for _, s, h in tried))
    assert bindings == [f"signup-{i}" for i, _, _ in tried]
    expected = [CodeCheck.OK if s in right else CodeCheck.MISMATCH for _, s, _ in tried]
    assert results == expected
