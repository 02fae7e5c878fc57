"""Jobs on BullMQ queues in Redis, the producer's side: `Queue` to submit, read the state of jobs,
and list and re-drive the failed ones (`bullmq_workers` consumes them).

Keys use BullMQ's default prefix `bull`, so Node producers and consumers built with default
options share these queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from bullmq import Job, Queue
from redis.exceptions import RedisError

from gatehouse.errors import Unavailable
from gatehouse.ports import JobState

log = logging.getLogger(__name__)
PREFIX = "bull"
STATES = {"prioritized": "waiting", "waiting-children": "waiting", "wait": "waiting"}
# A re-driven job starts afresh: its whole retry budget again.
RETRY = {"resetAttemptsMade": True, "resetAttemptsStarted": True}
T = TypeVar("T")


def _state(queue: str, job: Job, state: str) -> JobState:
    finished = int(job.finishedOn or 0)
    return JobState(
        id=str(job.id),
        queue=queue,
        name=job.name,
        state=STATES.get(state, state),
        result=job.returnvalue if isinstance(job.returnvalue, dict) else None,
        failed_reason=job.failedReason or None,
        attempts_made=job.attemptsMade,
        finished_at=datetime.fromtimestamp(finished / 1000, UTC) if finished else None,
    )


def job_options(
    attempts: int, backoff_ms: int, retention_seconds: int, retention_count: int
) -> dict[str, Any]:
    """The BullMQ options every job Gatehouse submits carries: retries with exponential
    backoff, and finished jobs kept for a while (their results are read back by id)."""
    keep = {"age": retention_seconds, "count": retention_count}
    return {
        "attempts": attempts,
        "backoff": {"type": "exponential", "delay": backoff_ms},
        "removeOnComplete": keep,
        "removeOnFail": keep,
    }


class BullmqJobs:
    """The producer side (`ports.Jobs`): what the HTTP door and Python producers use."""

    def __init__(
        self,
        redis_url: str,
        *,
        attempts: int = 5,
        backoff_ms: int = 1000,
        retention_seconds: int = 24 * 3600,
        retention_count: int = 10_000,
        timeout: float = 5.0,
    ):
        self._url = redis_url
        self._timeout = timeout
        self._queues: dict[str, Queue] = {}
        self._options = job_options(attempts, backoff_ms, retention_seconds, retention_count)

    def _queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, {"connection": self._url, "prefix": PREFIX})
        return self._queues[name]

    async def _call(self, work: Awaitable[T]) -> T:
        # The bullmq client retries a lost connection for minutes; a caller waiting on an HTTP
        # answer gets 503 after `timeout` instead.
        try:
            return await asyncio.wait_for(work, self._timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            raise Unavailable("The job queue is unavailable") from exc

    async def submit(
        self, queue: str, name: str, data: dict[str, Any], job_id: str | None = None
    ) -> str:
        options = dict(self._options)
        if job_id:
            options["jobId"] = job_id  # an existing id makes BullMQ return it and add nothing
        job = await self._call(self._queue(queue).add(name, data, options))
        return str(job.id)

    async def get(self, queue: str, job_id: str) -> JobState | None:
        q = self._queue(queue)

        async def read() -> tuple[Job, str] | None:
            # The state first: a job read before its state is final may lack its result.
            state = await q.getJobState(job_id)
            job = await Job.fromId(q, job_id)
            return None if job is None else (job, state)

        found = await self._call(read())
        if found is None:
            return None
        job, state = found
        return _state(queue, job, state)

    async def failed(self, queue: str, limit: int = 100) -> list[JobState]:
        jobs = await self._call(self._queue(queue).getFailed(0, max(limit, 1) - 1))
        return [_state(queue, job, "failed") for job in jobs]

    async def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> list[str]:
        q = self._queue(queue)
        if job_ids is None:  # the failed set as it is now: a job failing again waits its turn
            raw = await self._call(q.client.zrevrange(q.toKey("failed"), 0, -1))
            job_ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
        moved: list[str] = []
        for job_id in job_ids:
            job = await self._call(Job.fromId(q, job_id))
            if job is None:
                continue
            try:
                # Atomic in Redis: only a job still in the failed set moves (to waiting).
                await self._call(job.retry("failed", RETRY))
            except TypeError:  # bullmq's "not in the failed state" (running, done or waiting)
                continue
            moved.append(str(job.id))
        if moved:
            log.info("re-driven %d failed job(s) of %s", len(moved), queue)
        return moved

    async def close(self) -> None:
        for q in self._queues.values():
            with contextlib.suppress(Exception):
                await q.close()
        self._queues.clear()
