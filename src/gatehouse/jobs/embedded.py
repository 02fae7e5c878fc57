"""The in-process queue of the embedded `gatehouse serve`: BullMQ's semantics without Redis.

Submitting returns an id at once; `work` runs the jobs as asyncio tasks, retries a raising
attempt with exponential backoff up to `attempts`, and keeps each job's state and result in a
bounded table. Jobs live as long as the process (this is the no-server default)."""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gatehouse.errors import Unavailable
from gatehouse.ports import JobProcessor, JobRun, JobState

log = logging.getLogger(__name__)
FINISHED = ("completed", "failed")


@dataclass
class _Entry:
    queue: str
    id: str
    name: str
    # Dropped once the job completes: it holds passwords, codes and tokens. A failed job keeps
    # it (in this process's memory only) so that it can be re-driven.
    data: Any
    state: str = "waiting"
    result: dict[str, Any] | None = None
    failed_reason: str | None = None
    attempts_made: int = 0
    finished_at: datetime | None = None


class MemoryJobs:
    """Both sides of the queue (`ports.Jobs` and `ports.JobWorker`) in one process."""

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff_ms: int = 1000,
        max_backoff_ms: int = 60_000,
        capacity: int = 10_000,
    ):
        self._attempts = max(attempts, 1)
        self._backoff_ms = backoff_ms
        self._max_backoff_ms = max_backoff_ms
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._ready: dict[str, asyncio.Queue[_Entry]] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    def _queue(self, name: str) -> asyncio.Queue[_Entry]:
        if name not in self._ready:
            self._ready[name] = asyncio.Queue()
        return self._ready[name]

    async def submit(
        self, queue: str, name: str, data: dict[str, Any], job_id: str | None = None
    ) -> str:
        job_id = job_id or uuid.uuid4().hex
        if (queue, job_id) in self._entries:
            return job_id  # idempotent: the same id is the same job
        self._make_room()
        entry = _Entry(queue, job_id, name, copy.deepcopy(data))
        self._entries[(queue, job_id)] = entry
        self._queue(queue).put_nowait(entry)
        return job_id

    def _make_room(self) -> None:
        """Forget the oldest finished jobs; refuse new ones when the table is all unfinished."""
        if len(self._entries) < self._capacity:
            return
        for key in [k for k, e in self._entries.items() if e.state in FINISHED]:
            del self._entries[key]
            if len(self._entries) < self._capacity:
                return
        raise Unavailable("The in-process job queue is full")

    async def get(self, queue: str, job_id: str) -> JobState | None:
        entry = self._entries.get((queue, job_id))
        return None if entry is None else self._state(entry)

    @staticmethod
    def _state(entry: _Entry) -> JobState:
        return JobState(
            id=entry.id,
            queue=entry.queue,
            name=entry.name,
            state=entry.state,
            result=copy.deepcopy(entry.result),
            failed_reason=entry.failed_reason,
            attempts_made=entry.attempts_made,
            finished_at=entry.finished_at,
        )

    async def failed(self, queue: str, limit: int = 100) -> list[JobState]:
        found = [e for e in self._entries.values() if e.queue == queue and e.state == "failed"]
        found.reverse()  # the newest first among those that failed at the same instant
        found.sort(key=lambda e: e.finished_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return [self._state(e) for e in found[: max(limit, 1)]]

    async def retry(self, queue: str, job_ids: Sequence[str] | None = None) -> list[str]:
        if job_ids is None:
            job_ids = [job.id for job in await self.failed(queue, len(self._entries))]
        moved: list[str] = []
        for job_id in job_ids:
            entry = self._entries.get((queue, job_id))
            if entry is None or entry.state != "failed":
                continue
            entry.state, entry.attempts_made, entry.failed_reason = "waiting", 0, None
            entry.finished_at = None
            self._queue(queue).put_nowait(entry)
            moved.append(job_id)
        return moved

    async def work(
        self, queues: Sequence[str], process: JobProcessor, stop: asyncio.Event, concurrency: int
    ) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            await asyncio.gather(
                *(self._consume(q, process, stop, concurrency, running) for q in queues)
            )
        finally:
            # In-flight jobs finish; retries not yet due die with the process.
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            await asyncio.gather(*running, return_exceptions=True)

    async def _consume(
        self,
        queue: str,
        process: JobProcessor,
        stop: asyncio.Event,
        concurrency: int,
        running: set[asyncio.Task[None]],
    ) -> None:
        ready = self._queue(queue)
        slots = asyncio.Semaphore(max(concurrency, 1))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await slots.acquire()
                getting = asyncio.ensure_future(ready.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    slots.release()
                    break
                task = asyncio.ensure_future(self._run(getting.result(), process))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: slots.release())
        finally:
            stopping.cancel()

    async def _run(self, entry: _Entry, process: JobProcessor) -> None:
        attempt = entry.attempts_made + 1
        final = attempt >= self._attempts
        entry.state = "active"
        run = JobRun(entry.id, entry.queue, entry.name, entry.data, attempt, final)
        try:
            result = await process(run)
        except Exception as exc:
            entry.attempts_made = attempt
            entry.failed_reason = str(exc) or type(exc).__name__
            if final:
                entry.state, entry.finished_at = "failed", datetime.now(UTC)
                log.error(
                    "job %s/%s failed after %d attempts (%s)",
                    entry.queue,
                    entry.id,
                    attempt,
                    type(exc).__name__,
                )
                return
            entry.state = "delayed"
            delay = min(self._backoff_ms * 2 ** (attempt - 1), self._max_backoff_ms) / 1000
            log.warning(
                "job %s/%s attempt %d failed (%s); retried in %.1fs",
                entry.queue,
                entry.id,
                attempt,
                type(exc).__name__,
                delay,
            )
            self._retry_later(entry, delay)
            return
        entry.attempts_made = attempt
        entry.state, entry.result, entry.data = "completed", result, None
        entry.finished_at = datetime.now(UTC)

    def _retry_later(self, entry: _Entry, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(timer)
            if entry.state == "delayed":
                entry.state = "waiting"
                self._queue(entry.queue).put_nowait(entry)

        timer = loop.call_later(delay, due)
        self._timers.add(timer)
