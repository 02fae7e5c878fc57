"""Jobs on BullMQ queues in Redis, the consumer's side: one python bullmq `Worker` per queue.

A worker holds a lock on each job it runs and renews it; when a worker dies (SIGKILL, OOM, a
lost host) the lock expires and the stalled-job check of any other worker moves the job back to
waiting, so it runs again (`max_stalled_count` times at most: a job that keeps killing its
workers is failed instead). What a finished job leaves in Redis is cleaned (see `job_data`).

The library's worker is run on the hot path of Node's (`FastWorker`): that is what makes a
Python worker as fast as a Node one on the same Redis (benchmarks/jobs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bullmq import Job, Worker
from bullmq.custom_errors import UnrecoverableError

from gatehouse.domain.crypto import Keyring
from gatehouse.jobs.bullmq_queues import PREFIX
from gatehouse.jobs.fast_worker import BLOCKING_SOCKET_TIMEOUT, FastWorker
from gatehouse.jobs.job_data import redact, seal, unseal
from gatehouse.ports import JobProcessor, JobRun

log = logging.getLogger(__name__)


def with_socket_timeout(url: str, seconds: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "socket_timeout"]
    query.append(("socket_timeout", str(seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redacted(job: Job) -> dict[str, str] | None:
    """The fields a completed job is left with: its data with every secret blanked, written in
    the same Redis call that completes it (None: nothing to blank)."""
    cleaned = redact(job.data)
    if cleaned == job.data:
        return None
    return {"data": json.dumps(cleaned, separators=(",", ":"), allow_nan=False)}


def _attempts(job: Job) -> int:
    """A producer that sets no `attempts` gets one (BullMQ's default)."""
    return max(int(job.opts.get("attempts") or 1), 1)


class BullmqWorkers:
    """The consuming side (`ports.JobWorker`): one python bullmq `Worker` per queue.

    Its rate limiter is not used (it stalls in python bullmq 3.4). `lock_duration_ms` is how long
    a job stays locked to its worker without a renewal (renewed every half of it);
    `stalled_interval_ms` how often each worker looks for jobs whose lock expired; a job that
    stalls more than `max_stalled_count` times is failed. With `keyring`, the secrets of failed
    jobs are sealed rather than blanked, so that they can be re-driven (see `job_data`).
    `retention_seconds` (with `retention_count`) bounds the finished jobs of producers that set
    no `removeOnComplete`/`removeOnFail` of their own."""

    def __init__(
        self,
        redis_url: str,
        *,
        lock_duration_ms: int = 30_000,
        stalled_interval_ms: int = 30_000,
        max_stalled_count: int = 1,
        keyring: Keyring | None = None,
        retention_seconds: int | None = None,
        retention_count: int = 10_000,
    ):
        self._url = with_socket_timeout(redis_url, BLOCKING_SOCKET_TIMEOUT)
        self._options: dict[str, Any] = {
            "lockDuration": lock_duration_ms,
            "stalledInterval": stalled_interval_ms,
            "maxStalledCount": max_stalled_count,
        }
        if retention_seconds is not None:
            keep = {"age": retention_seconds, "count": retention_count}
            self._options.update(removeOnComplete=keep, removeOnFail=dict(keep))
        self._keyring = keyring
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
            worker = FastWorker(
                queue,
                self._processor(queue, process),
                {
                    "connection": self._url,
                    "prefix": PREFIX,
                    "concurrency": concurrency,
                    "autorun": False,
                    "name": f"gatehouse-{socket.gethostname()}",
                    **self._options,
                },
                finished_fields=_redacted,
            )
            workers.append(worker)
            # python bullmq 3.4 learns that the server can block for fractions of a second only
            # once the blocking connection has been used; until then, waits for delayed jobs
            # (retry backoff) are rounded up to whole seconds. Open it before the worker runs.
            await worker.blockingRedisConnection.getRedisVersion()
            worker.on("failed", lambda job, err, w=worker: self._failed(w, job, err))
            worker.on("error", lambda err, *_: log.error("worker error: %s", type(err).__name__))
            worker.on(
                "stalled",
                lambda job_id, *_, q=queue: log.warning(
                    "job %s/%s stalled (its worker stopped renewing the lock); back to waiting",
                    q,
                    job_id,
                ),
            )

    def _processor(self, queue: str, process: JobProcessor) -> Any:
        keyring = self._keyring

        async def run(job: Job, _token: str) -> dict[str, Any]:
            attempt = job.attemptsMade + 1
            final = attempt >= _attempts(job)
            data = job.data
            if keyring is not None:  # a re-driven job's sealed secrets, opened for this run
                data = unseal(data, keyring, queue, str(job.id))
            return await process(JobRun(str(job.id), queue, job.name, data, attempt, final))

        return run

    def _failed(self, worker: Worker, job: Job, err: BaseException) -> None:
        # Failed for good: no attempt left, or a failure BullMQ does not retry (a job that
        # stalled more than `max_stalled_count` times).
        if job.attemptsMade < _attempts(job) and not isinstance(err, UnrecoverableError):
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
        # Its secrets sealed in the background (a completed job's are blanked in the call that
        # completes it: `_redacted`).
        task = asyncio.ensure_future(self._seal(worker, job))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _seal(self, worker: Worker, job: Job) -> None:
        """A failed job's secrets sealed, for a re-drive (blanked without a key)."""
        if self._keyring is not None:
            cleaned = seal(job.data, self._keyring, worker.name, str(job.id))
        else:
            cleaned = redact(job.data)
        if cleaned == job.data:
            return
        try:
            await job.updateData(cleaned)
        except Exception as exc:  # already removed by retention: nothing left to clean
            log.debug("could not redact job %s/%s: %s", worker.name, job.id, type(exc).__name__)
