"""The signed-in cache's channel on Redis publish/subscribe (`ports.invalidation`).

Every process announces; every api process also listens (`listen`, a background role) and
applies what it hears to its own `SignedInCache`. Each listener publishes a heartbeat every
`beat_seconds`, which every listener hears: a listener that hears nothing for the cache's
`stale_after` (its connection cut, Redis gone, its loop stalled) stops answering from the cache
until it hears again, and then starts empty. Messages name only user and session ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gatehouse.errors import Unavailable
from gatehouse.selfservice.sessions.cache import SignedInCache

# Redis publish/subscribe ignores the database number: the channel names it, so deployments
# sharing one Redis server apart by database do not hear each other.
CHANNEL = "gatehouse-signed-in:{db}"
HOLD, RELEASE, BEAT = "hold", "release", "beat"
log = logging.getLogger(__name__)


class RedisInvalidations:
    def __init__(self, redis: Redis, cache: SignedInCache, *, beat_seconds: float = 0.5):
        self._redis, self.cache, self._beat = redis, cache, beat_seconds
        self.channel = CHANNEL.format(db=redis.connection_pool.connection_kwargs.get("db", 0))

    async def announce(self, keys: Collection[str], *, committed: bool) -> None:
        message = "\n".join([RELEASE if committed else HOLD, *keys])
        try:
            await self._redis.publish(self.channel, message)
        except (RedisError, OSError) as exc:
            raise Unavailable() from exc

    def apply(self, message: str) -> None:
        kind, *keys = message.split("\n")
        if kind == HOLD:
            self.cache.hold(keys)
        elif kind == RELEASE:
            self.cache.release(keys)
        else:
            self.cache.heard()

    async def listen(self, stop: asyncio.Event) -> None:
        """Until `stop`: subscribe, apply, beat; on any failure, drop the cache and retry."""
        while not stop.is_set():
            try:
                await self._listen_once(stop)
            except (RedisError, OSError) as exc:
                log.warning("signed-in cache channel lost (%s): reading the database", exc)
            finally:
                self.cache.lost()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._beat)

    async def _listen_once(self, stop: asyncio.Event) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        beats = asyncio.create_task(self._beats(stop))
        try:
            await pubsub.subscribe(self.channel)
            while not stop.is_set():
                if beats.done():  # its failure is the channel's
                    beats.result()
                    return
                message = await pubsub.get_message(timeout=self._beat)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    self.apply(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await beats
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _beats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._redis.publish(self.channel, BEAT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._beat)
