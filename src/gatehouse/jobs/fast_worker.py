"""python bullmq's Worker on the hot path of Node's (see FastWorker)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import bullmq
import msgpack  # type: ignore[import-untyped]
from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from bullmq.scripts import raw2NextJobData
from bullmq.timer import Timer
from redis.exceptions import ConnectionError as RedisConnectionError

from gatehouse.jobs.redis_pipeline import PipelinedRedis

# The worker waits for jobs with blocking Redis calls of up to 10 s; redis-py closes any call
# after its socket timeout (5 s by default), which made idle workers pick jobs up seconds late
# and left retries due more than 5 s later waiting forever. Give its connections longer (the
# pipelined ones too: a command unanswered this long drops the connection).
BLOCKING_SOCKET_TIMEOUT = 30
# The keys of BullMQ's moveToActive-11.lua, in its order (python bullmq's `Scripts.moveToActive`).
# fmt: off
MOVE_TO_ACTIVE_KEYS = ["wait", "active", "prioritized", "events", "stalled", "limiter", "delayed",
                       "paused", "meta", "pc", "marker"]
# fmt: on

# The python bullmq versions whose Worker internals (run loop, fetch, processJob, scripts'
# arguments) FastWorker was written against and tested with; pyproject pins the same range.
SUPPORTED_BULLMQ = "3.4.x"


def check_bullmq_version() -> None:
    """Refuses a python bullmq that FastWorker was not written for: it overrides internals
    that any release may change without notice, and would then run jobs wrongly, not fail."""
    installed = str(getattr(bullmq, "__version__", "unknown"))
    if installed.split(".")[:2] != SUPPORTED_BULLMQ.split(".")[:2]:
        raise RuntimeError(
            f"gatehouse's FastWorker supports python bullmq {SUPPORTED_BULLMQ} only (it overrides"
            f" Worker internals), and bullmq {installed} is installed: install bullmq>=3.4,<3.5,"
            " or review gatehouse/jobs/fast_worker.py against the new version and widen the range"
        )


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
        check_bullmq_version()  # before python bullmq builds anything
        super().__init__(name, processor, cast(Any, opts))
        self._finished_fields = finished_fields
        url = opts.get("connection")
        # No pipelined connection for TLS, a unix socket or options that are not a URL: every
        # override below falls back to python bullmq's own redis-py calls (the same scripts).
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
            # The worker's retention for jobs whose producer chose none, as python bullmq's
            # `processJob` does: a Node producer's results would otherwise stay forever.
            for option in ("removeOnComplete", "removeOnFail"):
                if option not in job.opts and option in self.opts:
                    job.opts[option] = self.opts[option]
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
