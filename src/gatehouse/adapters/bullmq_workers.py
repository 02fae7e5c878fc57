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
import math
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack  # type: ignore[import-untyped]
from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from bullmq.scripts import raw2NextJobData
from bullmq.timer import Timer
from redis.exceptions import ConnectionError as RedisConnectionError

from gatehouse.adapters.bullmq_jobs import PREFIX
from gatehouse.adapters.job_data import redact, seal, unseal
from gatehouse.adapters.redis_pipeline import PipelinedRedis
from gatehouse.domain.crypto import Keyring
from gatehouse.ports import JobProcessor, JobRun

log = logging.getLogger(__name__)
# The worker waits for jobs with blocking Redis calls of up to 10 s; redis-py closes any call
# after its socket timeout (5 s by default), which made idle workers pick jobs up seconds late
# and left retries due more than 5 s later waiting forever. Give its connections longer (the
# pipelined ones too: a command unanswered this long drops the connection).
BLOCKING_SOCKET_TIMEOUT = 30
# The keys of BullMQ's moveToActive-11.lua, in its order (python bullmq's `Scripts.moveToActive`).
MOVE_TO_ACTIVE_KEYS = [
    "wait",
    "active",
    "prioritized",
    "events",
    "stalled",
    "limiter",
    "delayed",
    "paused",
    "meta",
    "pc",
    "marker",
]


def with_socket_timeout(url: str, seconds: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "socket_timeout"]
    query.append(("socket_timeout", str(seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


Fields = Callable[[Job], dict[str, str] | None]


class FastWorker(Worker):  # type: ignore[misc]  # python bullmq has no types
    """python bullmq's `Worker` on the hot path of Node's, with BullMQ's own Lua scripts, keys
    and locks (so Node producers and workers share the queues):

    - finishing a job fetches the next one in the same call (`moveToFinished` with fetch-next),
      and the slot of the concurrency that ran it goes on with it: a busy worker makes one
      Redis call a job, where python bullmq makes two and starts two tasks;
    - new jobs are fetched one at a time (a fetch that finds none blocks on the queue's
      marker), not one per free slot at once: python bullmq made up to twice the concurrency of
      empty `moveToActive` calls for each job that arrived at an idle worker;
    - those two scripts go through one pipelined connection (`PipelinedRedis`) instead of
      python bullmq's single redis-py connection, on which every slot waited its turn, and the
      wait on the marker through another (hiredis parses both);
    - `finished_fields(job)` gives fields written in the call that completes the job.

    Everything else (failures, retries, delays, locks, the stalled check, pause and close) is
    python bullmq's."""

    running: bool

    def __init__(
        self,
        name: str,
        processor: Callable[[Job, str], Coroutine[Any, Any, Any]],
        opts: dict[str, Any],
        *,
        finished_fields: Fields | None = None,
    ):
        super().__init__(name, processor, cast(Any, opts))
        self._finished_fields = finished_fields
        url = opts.get("connection")
        self._fast: PipelinedRedis | None = None
        self._blocking: PipelinedRedis | None = None
        if isinstance(url, str) and PipelinedRedis.supports(url):
            self._fast = PipelinedRedis(url, timeout=BLOCKING_SOCKET_TIMEOUT, name=self.clientName)
            self._blocking = PipelinedRedis(
                url, timeout=BLOCKING_SOCKET_TIMEOUT, name=self.clientName
            )
        self._wake = asyncio.Event()
        self._fetching: asyncio.Task[None] | None = None
        self._slots = 0
        self._tokens = 0

    async def run(self) -> None:
        """The main loop of Node's worker: one fetch at a time while a slot is free; a fetched
        job starts a slot, which runs on with the jobs its completions fetch."""
        if self.running:
            raise RuntimeError("Worker is already running")
        await self._ensure_client_names()
        self.lockManager.start()
        self.stalledCheckTimer = Timer(
            self.opts["stalledInterval"] / 1000, self.runStalledJobsCheck, self.emit
        )
        self.running = True
        try:
            while not self.closed and not self.closing:
                self._wake.clear()
                if self.paused:
                    await self.resume_event.wait()
                    continue
                if self._fetching is None and self._slots < self.opts["concurrency"]:
                    self._fetching = self._spawn(self._fetch())
                await self._wake.wait()
            while self.processing:  # closing: the jobs in flight finish
                await asyncio.wait(set(self.processing))
        finally:
            self.running = False
            if not self.closing:  # cancelled
                for task in self.processing:
                    task.cancel()
                if self.waiting is not None and not self.waiting.done():
                    self.waiting.cancel()
                await asyncio.gather(*self.processing, return_exceptions=True)
                self.processing.clear()
            with contextlib.suppress(Exception):
                self.stalledCheckTimer.stop()
            await self.lockManager.close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self.processing.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[None]) -> None:
        self.processing.discard(task)
        if task is self._fetching:
            self._fetching = None
        if not task.cancelled() and task.exception() is not None:
            self.emit("error", task.exception())
        self._wake.set()

    async def _fetch(self) -> None:
        self._tokens += 1
        token = f"{self.id}:{self._tokens}"
        job = await self.retryIfFailed(
            lambda: self._next_job(token),
            {"delay_in_ms": self.opts["runRetryDelay"], "only_emit_error": True},
        )
        if job is not None:  # in `processing` before this fetch is done: pause waits for it
            self._slots += 1
            self._spawn(self._slot(job, token))
            # The next fetch waits on the queue's marker rather than asking at once. Taking a
            # job sets the marker again (BullMQ's scripts do, for the other workers), so the
            # wait returns at once and the fetch then asks; but an idle queue costs one empty
            # `moveToActive` a job instead of two (one now, one after the stale marker).
            self.drained = True

    async def _next_job(self, token: str) -> Job | None:
        # python bullmq retries a fetch that failed for want of Redis without pausing once the
        # worker is closing: a closing worker fetches no more.
        return None if self.closing else await self.getNextJob(token)

    async def _slot(self, job: Job, token: str) -> None:
        try:
            await self.processJob(job, token)
        finally:
            self._slots -= 1

    async def close(self, force: bool = False) -> None:
        self._wake.set()
        if self._blocking is not None:  # no more waiting for jobs, even for a Redis away
            await self._blocking.aclose()
        try:
            await super().close(force)
        finally:
            if self._fast is not None:
                await self._fast.aclose()

    async def waitForJob(self) -> int:
        """python bullmq's wait on the queue's marker (BZPOPMIN), on a pipelined connection of
        its own: the idle worker's every job starts with it."""
        if self._blocking is None:
            return cast(int, await super().waitForJob())
        timeout = self.getBlockTimeout(self.blockUntil)
        if not self.backend.capabilities.get("canDoubleTimeout", False):
            timeout = math.ceil(timeout)
        blocking = self._blocking
        try:
            found = await self._again_if_lost(
                lambda: blocking.execute_blocking("BZPOPMIN", self.keys["marker"], timeout)
            )
        except Exception as err:
            if self.isConnectionError(err) and not self.closing and not self.closed:
                await asyncio.sleep(0.1)  # Redis away: the caller's retries must not spin
            raise
        if found:
            _key, member, score = found
            return int(float(score)) if member else 0
        return 0

    async def moveToActive(self, token: str) -> Job | None:
        if self._fast is None:
            return await super().moveToActive(token)
        scripts = self.scripts
        options = {
            "token": token,
            "lockDuration": self.opts.get("lockDuration", 0),
            "limiter": self.opts.get("limiter"),
        }
        args = [scripts.keys[""], round(time.time() * 1000), msgpack.packb(options)]
        fast = self._fast
        script = scripts.commands["moveToActive"]
        keys = scripts.getKeys(MOVE_TO_ACTIVE_KEYS)
        raw = await self._again_if_lost(lambda: fast.evalsha(script, keys, args))
        return await self._job_of(raw, token)

    async def _job_of(self, raw: list[Any], token: str) -> Job | None:
        """The job a fetch answered with (`moveToActive`, or `moveToFinished` with fetch-next),
        taken as python bullmq's `moveToActive` takes it; None when it found none."""
        data, job_id, limit_until, delay_until = raw2NextJobData(raw)
        return await self.nextJobFromJobData(data, job_id, limit_until, delay_until, token)

    async def _again_if_lost(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """A fetch whose connection was lost is made once more on a new one (which waits for
        a Redis that is restarting), as redis-py's clients do: python bullmq would otherwise
        wait `runRetryDelay` (15 s) before fetching again. A job the lost call had taken comes
        back when its lock expires (the stalled-job check)."""
        try:
            return await call()
        except RedisConnectionError:
            if self.closing or self.closed:
                raise
            return await call()

    async def processJob(self, job: Job, token: str) -> None:
        current: Job | None = job
        while current is not None:
            current = await self._run_one(current, token)

    async def _run_one(self, job: Job, token: str) -> Job | None:
        """One job to its end (python bullmq's `processJob`); then the next job, if finishing
        this one fetched one (locked with the same token)."""
        raw: Any = None
        try:
            self.jobs.add((job, token))
            self.lockManager.track_job(job.id, token, int(time.time() * 1000))
            if job.deferredFailure:
                await job.moveToFailed(UnrecoverableError(job.deferredFailure), token)
                self.emit("failed", job, UnrecoverableError(job.deferredFailure))
                return None
            result = await self.processor(job, token)
            if not self.forceClosing:
                raw = await self._complete(job, result, token, not (self.closing or self.paused))
                job.returnvalue = result
                job.attemptsMade = job.attemptsMade + 1
            self.emit("completed", job, result)
        except (DelayedError, WaitingChildrenError):
            return None
        except Exception as err:
            try:
                if not self.forceClosing:
                    await job.moveToFailed(err, token)
                self.emit("failed", job, err)
            except Exception as failure:
                self.emit("error", failure, job)
            return None
        finally:
            self.jobs.discard((job, token))
            self.lockManager.untrack_job(job.id)
        if not isinstance(raw, list):  # 0: nothing fetched (none waiting, or none asked for)
            return None
        following = await self._job_of(raw, token)
        if following is not None:
            self.emit("active", following, "waiting")
        return following

    async def _complete(self, job: Job, result: Any, token: str, fetch_next: bool) -> Any:
        """`moveToFinished` to completed (fetching the next job when asked): its raw answer."""
        remove = job.opts.get("removeOnComplete", False)
        fields = self._finished_fields(job) if self._finished_fields else None
        keys, args = self.scripts.moveToFinishedArgs(
            job, result, "returnvalue", remove, "completed", token, fetch_next, fields
        )
        script = self.scripts.commands["moveToFinished"]
        if self._fast is not None:
            raw = await self._fast.evalsha(script, keys, args)
        else:
            raw = await script(keys=keys, args=args)
        if isinstance(raw, int) and raw < 0:
            raise self.scripts.finishedErrors(
                {"code": raw, "jobId": job.id, "command": "moveToFinished", "state": "active"}
            )
        return raw


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
    jobs are sealed rather than blanked, so that they can be re-driven (see `job_data`)."""

    def __init__(
        self,
        redis_url: str,
        *,
        lock_duration_ms: int = 30_000,
        stalled_interval_ms: int = 30_000,
        max_stalled_count: int = 1,
        keyring: Keyring | None = None,
    ):
        self._url = with_socket_timeout(redis_url, BLOCKING_SOCKET_TIMEOUT)
        self._options: dict[str, Any] = {
            "lockDuration": lock_duration_ms,
            "stalledInterval": stalled_interval_ms,
            "maxStalledCount": max_stalled_count,
        }
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
