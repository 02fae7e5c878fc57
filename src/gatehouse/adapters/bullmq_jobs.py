"""Jobs on BullMQ queues in Redis: `Queue` to submit and read, one `Worker` per queue to consume.

Keys use BullMQ's default prefix `bull`, so Node producers and consumers built with default
options share these queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from bullmq import Job, Queue, Worker
from redis.exceptions import RedisError

from gatehouse.errors import Unavailable
from gatehouse.ports import JobProcessor, JobRun, JobState

log = logging.getLogger(__name__)
PREFIX = "bull"
# Job data holds passwords, codes and tokens: once a job is finished they are blanked, so they do
# not rest in Redis for the retention period (results stay readable; they are the point).
SECRET_FIELDS = frozenset(
    {"password", "current_password", "new_password", "otp", "code", "token", "refresh_token"}
)
REDACTED = "[redacted]"
STATES = {"prioritized": "waiting", "waiting-children": "waiting", "wait": "waiting"}
T = TypeVar("T")


def _attempts(job: Job) -> int:
    """A producer that sets no `attempts` gets one (BullMQ's default)."""
    return max(int(job.opts.get("attempts") or 1), 1)


def redact(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: REDACTED if k in SECRET_FIELDS else redact(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


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
        keep = {"age": retention_seconds, "count": retention_count}
        self._options: dict[str, Any] = {
            "attempts": attempts,
            "backoff": {"type": "exponential", "delay": backoff_ms},
            "removeOnComplete": keep,
            "removeOnFail": keep,
        }

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
        result = job.returnvalue if isinstance(job.returnvalue, dict) else None
        return JobState(
            id=str(job.id),
            queue=queue,
            name=job.name,
            state=STATES.get(state, state),
            result=result,
            failed_reason=job.failedReason or None,
            attempts_made=job.attemptsMade,
        )

    async def close(self) -> None:
        for q in self._queues.values():
            with contextlib.suppress(Exception):
                await q.close()
        self._queues.clear()


class BullmqWorkers:
    """The consuming side (`ports.JobWorker`): one python bullmq `Worker` per queue.

    Its rate limiter is not used (it stalls in python bullmq 3.4)."""

    def __init__(self, redis_url: str):
        self._url = redis_url
        self._pending: set[asyncio.Task[None]] = set()

    async def work(
        self, queues: Sequence[str], process: JobProcessor, stop: asyncio.Event, concurrency: int
    ) -> None:
        workers: list[Worker] = []
        runs: list[asyncio.Task[Any]] = []
        starting = asyncio.ensure_future(self._start(queues, process, concurrency, workers))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a start-up failure ends the role
                runs = [asyncio.ensure_future(w.run()) for w in workers]
                # A worker closed before its run loop is up reconnects in that loop and leaks
                # the connection: wait until every loop runs (moments, unless Redis is away).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        while not all(w.running for w in workers):  # noqa: ASYNC110 (a library flag)
                            await asyncio.sleep(0.005)
                log.info("worker consuming %s (concurrency %d)", ", ".join(queues), concurrency)
                await stopping
        finally:
            stopping.cancel()
            if not starting.done():
                # Stopped while starting: let the start finish (milliseconds) so no connection is
                # cut mid-command, unless Redis is away and the start keeps retrying.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(starting), 5)
                starting.cancel()
            # SIGTERM drains: pause() stops taking jobs and waits for the ones in flight; their
            # data is blanked while the connections are still open; then close.
            await asyncio.gather(*(self._drain(w) for w in workers), return_exceptions=True)
            await asyncio.gather(*self._pending, return_exceptions=True)
            await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
            await asyncio.gather(*runs, return_exceptions=True)

    @staticmethod
    async def _drain(worker: Worker) -> None:
        """`pause()` cancels the idle wait for new jobs only if that wait has begun; one that
        begins just after would hold the drain for the whole blocking timeout (seconds)."""
        pausing = asyncio.ensure_future(worker.pause())
        while not pausing.done():
            waiting = worker.waiting
            if waiting is not None and not waiting.done():
                waiting.cancel()  # the worker reads this cancellation as "paused": no job lost
            await asyncio.wait({pausing}, timeout=0.05)
        pausing.result()

    async def _start(
        self,
        queues: Sequence[str],
        process: JobProcessor,
        concurrency: int,
        workers: list[Worker],
    ) -> None:
        for queue in queues:
            worker = Worker(
                queue,
                self._processor(queue, process),
                {
                    "connection": self._url,
                    "prefix": PREFIX,
                    "concurrency": concurrency,
                    "autorun": False,
                    "name": f"gatehouse-{socket.gethostname()}",
                },
            )
            workers.append(worker)
            # python bullmq 3.4 learns that the server can block for fractions of a second only
            # once the blocking connection has been used; until then, waits for delayed jobs
            # (retry backoff) are rounded up to whole seconds. Open it before the worker runs.
            await worker.blockingRedisConnection.getRedisVersion()
            worker.on("completed", lambda job, _result, w=worker: self._finished(w, job))
            worker.on("failed", lambda job, err, w=worker: self._failed(w, job, err))
            worker.on("error", lambda err, *_: log.error("worker error: %s", type(err).__name__))

    @staticmethod
    def _processor(queue: str, process: JobProcessor) -> Any:
        async def run(job: Job, _token: str) -> dict[str, Any]:
            attempt = job.attemptsMade + 1
            final = attempt >= _attempts(job)
            return await process(JobRun(str(job.id), queue, job.name, job.data, attempt, final))

        return run

    def _failed(self, worker: Worker, job: Job, err: BaseException) -> None:
        if job.attemptsMade < _attempts(job):
            log.warning(
                "job %s/%s attempt %d failed (%s); retried with backoff",
                worker.name,
                job.id,
                job.attemptsMade,
                type(err).__name__,
            )
            return
        log.error(
            "job %s/%s failed after %d attempts (%s)",
            worker.name,
            job.id,
            job.attemptsMade,
            type(err).__name__,
        )
        self._finished(worker, job)

    def _finished(self, worker: Worker, job: Job) -> None:
        task = asyncio.ensure_future(self._redact(worker, job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _redact(worker: Worker, job: Job) -> None:
        cleaned = redact(job.data)
        if cleaned == job.data:
            return
        try:
            await job.updateData(cleaned)
        except Exception as exc:  # already removed by retention: nothing left to clean
            log.debug("could not redact job %s/%s: %s", worker.name, job.id, type(exc).__name__)
