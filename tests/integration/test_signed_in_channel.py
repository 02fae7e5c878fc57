"""The signed-in cache's channel on the real Redis (realtime/invalidations.py): what one process
announces empties every listening process's cache; a listener cut off from Redis stops answering
from its cache within `stale_after` and starts empty when it hears again (fail closed); and an
announcement Redis cannot take raises `Unavailable` (so the change it announces is not made)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from gatehouse.domain.users import User
from gatehouse.errors import Unavailable
from gatehouse.realtime.invalidations import RedisInvalidations
from gatehouse.selfservice.sessions.cache import SignedInCache, session_key, user_key
from tests.conftest import free_port

pytestmark = pytest.mark.integration
AT = datetime(2026, 1, 1, tzinfo=UTC)


def a_user(user_id: str) -> User:
    return User(
        id=user_id,
        email=f"{user_id}@example.com",
        name="Ada",
        password_hash="x",
        created_at=AT,
        updated_at=AT,
    )


class Cuttable:
    """A TCP proxy to Redis that can go silent (a partition, as a listener sees it: no reset,
    nothing through) and come back."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self.writers: list[asyncio.StreamWriter] = []
        self.silent = False
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.silent:  # taken, never answered
            writer.transport.pause_reading()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.silent = True
        for writer in self.writers:
            writer.transport.pause_reading()

    def heal(self) -> None:
        """Through again: the silent connections are closed, so the client reconnects."""
        self.silent = False
        writers, self.writers = self.writers, []
        for writer in writers:
            writer.close()

    async def stop(self) -> None:
        self.heal()
        if self.server is not None:
            self.server.close()


async def until(check: object, timeout: float = 5.0) -> float:
    """Seconds until `check()` is true."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.001)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def listening(url: str) -> AsyncIterator[tuple[RedisInvalidations, asyncio.Task[None]]]:
    redis = Redis.from_url(url)
    channel = RedisInvalidations(redis, SignedInCache(), beat_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(channel.listen(stop))
    try:
        await until(channel.cache.live)
        yield channel, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()


async def test_an_announcement_reaches_every_listening_process(redis_url: str) -> None:
    async with listening(redis_url) as (one, _), listening(redis_url) as (two, _):
        for cache in (one.cache, two.cache):
            cache.put(cache.ticket(), "s1", a_user("u1"))
            cache.put(cache.ticket(), "s2", a_user("u2"))
        writer = Redis.from_url(redis_url)
        announcer = RedisInvalidations(writer, SignedInCache())
        try:
            start = time.monotonic()
            await announcer.announce([user_key("u1")], committed=False)
            took = await until(
                lambda: one.cache.get("s1", "u1") is None and two.cache.get("s1", "u1") is None
            )
            print(
                f"\nhold heard by both listeners {1000 * (time.monotonic() - start):.1f} ms "
                f"after it was sent ({1000 * took:.1f} ms after publish returned)"
            )
            assert one.cache.get("s2", "u2") is not None  # another user's entry stays
            one.cache.put(one.cache.ticket(), "s1", a_user("u1"))
            assert one.cache.get("s1", "u1") is None  # held: not stored again
            await announcer.announce([user_key("u1")], committed=True)
            await until(lambda: not one.cache._held)
            one.cache.put(one.cache.ticket(), "s1", a_user("u1"))
            assert one.cache.get("s1", "u1") is not None
            await announcer.announce([session_key("s2")], committed=True)
            await until(lambda: two.cache.get("s2", "u2") is None)
        finally:
            await writer.aclose()


async def test_a_listener_cut_off_from_redis_stops_answering_and_comes_back_empty(
    redis_url: str,
) -> None:
    from redis.asyncio.connection import parse_url

    target = parse_url(redis_url)
    proxy = Cuttable(str(target.get("host", "127.0.0.1")), int(target.get("port", 6379)))
    await proxy.start()
    db = target.get("db", 0)
    try:
        redis = Redis(
            host="127.0.0.1", port=proxy.port, db=db, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        cache = SignedInCache(stale_after=1.0)
        channel = RedisInvalidations(redis, cache, beat_seconds=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(channel.listen(stop))
        await until(cache.live)
        cache.put(cache.ticket(), "s1", a_user("u1"))
        assert cache.get("s1", "u1") is not None
        proxy.cut()
        deaf = await until(lambda: cache.get("s1", "u1") is None)
        print(f"\ncut off: the cache stopped answering after {deaf:.2f} s (stale_after 1.0 s)")
        assert deaf <= 1.5
        cache.put(cache.ticket(), "s2", a_user("u2"))
        assert len(cache) <= 1 and cache.get("s2", "u2") is None  # nothing stored while deaf
        proxy.heal()
        back = await until(cache.live, timeout=15)
        print(f"heard again {back:.2f} s later, {len(cache)} entries kept")
        assert cache.get("s1", "u1") is None and len(cache) == 0
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()
    finally:
        await proxy.stop()


async def test_an_announcement_redis_cannot_take_is_unavailable() -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1.0)
    channel = RedisInvalidations(dead, SignedInCache())
    try:
        with pytest.raises(Unavailable):
            await channel.announce([user_key("u1")], committed=False)
    finally:
        await dead.aclose()
