"""Each port's implementations side by side: the embedded one that `gatehouse serve` runs with no
server, and the real one on the real service. Every fixture here is parametrized over both, so a
contract test runs the same assertions against each; the test id names which (`[memory]`,
`[redis]`, `[kafka]`, `[bullmq]`). The real services come from tests/conftest.py (a missing one
fails under GATEHOUSE_TEST_REQUIRE_SERVICES=1); each test gets keys, topics and queues of its own
on them, so nothing needs emptying and runs on a shared service do not meet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

import pytest
from redis.asyncio import Redis

from gatehouse.jobs.bullmq_queues import BullmqJobs
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.embedded import MemoryJobs
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.kafka import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.ports import (
    CodeStore,
    Delivery,
    DeliverySource,
    EventPublisher,
    FailureCounter,
    JobProcessor,
    Jobs,
    JobState,
    JobWorker,
)
from gatehouse.security import memory
from gatehouse.security.memory import MemoryCodeStore, MemoryFailureCounter
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.security.redis_codes import RedisCodeStore
from gatehouse.security.redis_failures import RedisFailureCounter
from tests.conftest import unique

# --- codes, failure counts and rate limits: in memory or in Redis ------------------------------


@pytest.fixture(params=["memory", "redis"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis | None]:
    """A client of the real Redis, or None for the memory implementations."""
    if request.param == "memory":
        yield None
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    yield client
    await client.aclose()


class Clock:
    """The time an implementation lives by. Redis keeps real time, so letting time pass sleeps
    (to whole seconds: Redis expires keys to the second); the memory implementations read a
    clock the test moves forward, so there it passes at once."""

    def __init__(self, movable: bool):
        self._movable = movable
        self._ahead = 0.0

    def now(self) -> float:
        """Epoch seconds, what callers hand to a `FailureCounter`."""
        return time.time() + self._ahead

    def monotonic(self) -> float:
        return time.monotonic() + self._ahead

    async def elapse(self, seconds: float) -> None:
        if self._movable:
            self._ahead += seconds
        else:
            await asyncio.sleep(seconds)


@pytest.fixture
def clock(redis: Redis | None, monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock(movable=redis is None)
    if redis is None:
        monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=made.monotonic))
    return made


@pytest.fixture
async def codes(
    redis: Redis | None, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[CodeStore]:
    """On Redis, as `bootstrap.build` makes it: its calls on a pipelined connection (redis-py's
    own path, for TLS and unix sockets, is tests/integration/test_redis_codes.py's too)."""
    if redis is None:
        yield MemoryCodeStore()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisCodeStore.connected(redis, url, prefix=unique("contract:code") + ":")
    assert store._pipe is not None
    yield store
    await store.aclose()


@pytest.fixture
def failures(redis: Redis | None, clock: Clock) -> FailureCounter:
    if redis is None:
        return MemoryFailureCounter()
    return RedisFailureCounter(redis, prefix=unique("contract:fail") + ":")


@pytest.fixture
def limiter(
    redis: Redis | None, request: pytest.FixtureRequest
) -> Callable[[dict[str, str]], LimitsRateLimiter]:
    """A rate limiter with the given rules, on the memory or the Redis storage of `limits` (the
    Redis one on the client's pool, as `bootstrap.build` does)."""

    def make(rules: dict[str, str]) -> LimitsRateLimiter:
        if redis is None:
            return LimitsRateLimiter(rules)
        url = request.getfixturevalue("redis_url")
        prefix = unique("contract:rl")
        return LimitsRateLimiter(rules, url, prefix=prefix, pool=redis.connection_pool)

    return make


# --- the event bus: the in-process bus or Kafka -------------------------------------------------


@dataclass
class Bus:
    """Two fresh topics of an event bus, its publisher (started), and new members of one
    consumer group on `topic`."""

    publisher: EventPublisher
    topic: str
    other_topic: str
    new_source: Callable[[], DeliverySource]


@pytest.fixture(params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    topic, other = unique("contract-events"), unique("contract-other")
    sources: list[DeliverySource] = []
    publisher: EventPublisher
    if request.param == "memory":
        embedded = MemoryBus()
        publisher = embedded

        def new_source() -> DeliverySource:
            sources.append(embedded.source(topic))
            return sources[-1]

    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        # Three partitions: the order promised is one key's, not the topic's.
        await asyncio.to_thread(ensure_topics, bootstrap, [topic, other], 3, 1)
        publisher = KafkaPublisher(bootstrap, "gatehouse-contract")
        group = unique("contract-group")

        def new_source() -> DeliverySource:
            sources.append(KafkaSource(bootstrap, group, topic, "gatehouse-contract"))
            return sources[-1]

    await publisher.start()
    yield Bus(publisher, topic, other, new_source)
    for source in sources:
        with contextlib.suppress(Exception):  # the test may have closed it already
            await source.close()
    await publisher.close()


async def take(
    source: DeliverySource,
    count: int,
    *,
    ack: Callable[[int], bool] = lambda _n: True,
    timeout: float = 30,
) -> list[Delivery]:
    """The first `count` deliveries of `source`, the nth (from 0) acknowledged if `ack(n)`. A
    source is read by one loop, as the courier reads it: this is that loop."""
    taken: list[Delivery] = []
    # Both sources' `deliveries` are async generators: closed when the loop ends.
    stream = cast(AsyncGenerator[Delivery, None], source.deliveries())
    async with asyncio.timeout(timeout), contextlib.aclosing(stream):
        async for delivery in stream:
            if ack(len(taken)):
                await delivery.ack()
            taken.append(delivery)
            if len(taken) == count:
                break
    return taken


# --- jobs: the in-process queue or BullMQ ------------------------------------------------------

ATTEMPTS = 3  # every queue under test retries a raising job twice, 10 ms then 20 ms later


@dataclass
class Working:
    """A `JobWorker.work` running in the background."""

    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@dataclass
class Queues:
    """Both sides of a job queue, a queue name of the test's own, and workers to start."""

    jobs: Jobs
    worker: JobWorker
    queue: str
    running: list[Working] = field(default_factory=list)

    def work(
        self, process: JobProcessor, concurrency: int = 5, queues: Sequence[str] | None = None
    ) -> Working:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            self.worker.work(queues or [self.queue], process, stop, concurrency)
        )
        self.running.append(Working(stop, task))
        return self.running[-1]

    async def finished(self, job_id: str, queue: str | None = None) -> JobState:
        async with asyncio.timeout(30):
            while True:
                state = await self.jobs.get(queue or self.queue, job_id)
                if state is not None and state.state in ("completed", "failed"):
                    return state
                await asyncio.sleep(0.005)


@pytest.fixture(params=["memory", "bullmq"])
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    queue = unique("contract-queue")
    if request.param == "memory":
        embedded = MemoryJobs(attempts=ATTEMPTS, backoff_ms=10)
        made = Queues(embedded, embedded, queue)
    else:
        url = request.getfixturevalue("redis_url")
        made = Queues(BullmqJobs(url, attempts=ATTEMPTS, backoff_ms=10), BullmqWorkers(url), queue)
    yield made
    for working in made.running:
        await working.close()
    if isinstance(made.jobs, BullmqJobs):
        await made.jobs.close()
