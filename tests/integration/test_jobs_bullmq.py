"""What only the BullMQ adapters have, on the real Redis: no secrets left at rest, Redis away as
Unavailable, the lock and stalled-job settings, retries due later than redis-py's socket timeout,
and the worker's Node-like hot path (one Redis call a busy job, one fetch an idle one, a pipelined
connection on the URL's database). What every job queue does (submit, read, retries and `final`,
the failed set, concurrency, draining) is in tests/contract/test_jobs.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bullmq import Job, Queue, Worker
from bullmq.redis_connection import SCRIPT_DEFINITIONS, loadScript
from redis.asyncio import Redis

from gatehouse.bootstrap import build_jobs
from gatehouse.config import Settings
from gatehouse.errors import Unavailable
from gatehouse.jobs.bullmq_queues import BullmqJobs
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.fast_worker import FastWorker
from gatehouse.jobs.redis_pipeline import PipelinedRedis
from gatehouse.ports import JobRun
from tests.conftest import free_port, unique
from tests.e2e.stack import own_redis_db
from tests.integration.conftest import finished

Process = Callable[[JobRun], Awaitable[dict[str, Any]]]


@pytest.fixture
def queue() -> str:
    return unique("test-queue")  # BullMQ keys of their own for each test


@pytest.fixture
async def jobs(redis_url: str) -> AsyncIterator[BullmqJobs]:
    made = BullmqJobs(redis_url, attempts=3, backoff_ms=50)
    yield made
    await made.close()


class Running:
    """A `BullmqWorkers.work` in the background, stopped and drained at the end of the test."""

    def __init__(self, redis_url: str, queue: str, process: Process, concurrency: int = 5):
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(
            BullmqWorkers(redis_url).work([queue], process, self.stop, concurrency)
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def workers() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        await running.close()


async def test_secrets_in_job_data_are_blanked_in_the_call_that_completes_the_job(
    redis_url: str, jobs: BullmqJobs, queue: str, workers: list[Running]
) -> None:
    seen: list[Any] = []

    async def process(run: JobRun) -> dict[str, Any]:
        seen.append(run.data)
        return {"success": True, "message": "ok", "data": {}}

    data = {"email": "ada@example.com", "password": "hunter2hunter2", "otp": "123456"}
    job_id = await jobs.submit(queue, queue, {**data, "nested": {"token": "eyJ.x.y"}})
    workers.append(Running(redis_url, queue, process))
    await finished(jobs, queue, job_id)
    assert seen[0]["password"] == "hunter2hunter2"  # the processor got the real data
    reader = Queue(queue, {"connection": redis_url})
    try:
        # No window: the first read after the job is completed finds the secrets gone.
        job = await Job.fromId(reader, job_id)
        assert job is not None and job.returnvalue == {"success": True, "message": "ok", "data": {}}
        assert job.data == {
            "email": "ada@example.com",
            "password": "[redacted]",
            "otp": "[redacted]",
            "nested": {"token": "[redacted]"},
        }
    finally:
        await reader.close()


async def test_redis_down_is_unavailable_not_a_hang() -> None:
    dead = BullmqJobs(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(Unavailable):
            await dead.submit("read-user", "read-user", {})
        with pytest.raises(Unavailable):
            await dead.get("read-user", "1")
    finally:
        await dead.close()


async def test_lock_and_stalled_check_settings_reach_the_bullmq_workers(
    redis_url: str, queue: str, tmp_path: Path
) -> None:
    """A dead worker's jobs come back after the lock and the stalled check configured (the
    worker-kill fault test in tests/e2e/test_job_faults.py shows them coming back)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        job_lock_duration_ms=4321,
        job_stalled_interval_ms=1234,
        job_max_stalled_count=2,
    )
    _jobs, consumer = build_jobs(settings)
    assert isinstance(consumer, BullmqWorkers)

    async def process(run: JobRun) -> dict[str, Any]:
        return {"success": True, "message": "ok", "data": {}}

    started: list[Worker] = []
    try:
        await consumer._start([queue], process, 3, started)
        [worker] = started
        assert worker.opts["lockDuration"] == 4321 and worker.opts["lockRenewTime"] == 2160
        assert worker.opts["stalledInterval"] == 1234 and worker.opts["maxStalledCount"] == 2
        assert worker.opts["concurrency"] == 3
    finally:
        for worker in started:
            await worker.close()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.job_lock_duration_ms, defaults.job_stalled_interval_ms) == (30_000, 30_000)
    assert defaults.job_max_stalled_count == 1


async def test_a_retry_due_later_than_redis_pys_socket_timeout_still_runs(
    redis_url: str, queue: str, workers: list[Running]
) -> None:
    """redis-py cuts calls after 5 s unless told otherwise, which once stranded retries due more
    than 5 s later: the worker's blocking connections get a longer socket timeout."""
    slow = BullmqJobs(redis_url, attempts=2, backoff_ms=7000)
    tries: list[int] = []

    async def process(run: JobRun) -> dict[str, Any]:
        tries.append(run.attempt)
        if run.attempt == 1:
            raise ConnectionError("first try fails")
        return {"success": True, "message": "second try", "data": {}}

    workers.append(Running(redis_url, queue, process))
    job_id = await slow.submit(queue, "later", {}, job_id=unique("job"))
    state = await finished(slow, queue, job_id)
    await slow.close()
    assert state.state == "completed"
    assert tries == [1, 2]


class ScriptCalls:
    """Which of BullMQ's Lua scripts the workers' pipelined connection runs, by name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.names = {
            hashlib.sha1(loadScript(file).encode(), usedforsecurity=False).hexdigest(): name
            for name, file in SCRIPT_DEFINITIONS.items()
        }
        self.calls: list[str] = []
        real = PipelinedRedis.evalsha

        async def spy(redis: PipelinedRedis, script: Any, keys: Any, args: Any) -> Any:
            self.calls.append(self.names.get(script.sha, script.sha))
            return await real(redis, script, keys, args)

        monkeypatch.setattr(PipelinedRedis, "evalsha", spy)

    def count(self, name: str) -> int:
        return self.calls.count(name)


async def test_a_busy_worker_finishes_a_job_and_takes_the_next_in_one_call(
    redis_url: str, jobs: BullmqJobs, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like Node's worker: the call that completes a job fetches the next one, so a worker with
    a backlog makes one Redis call a job (python bullmq made two), and no job runs twice."""
    scripts = ScriptCalls(monkeypatch)
    ran: list[str] = []

    async def process(run: JobRun) -> dict[str, Any]:
        ran.append(run.id)
        return {"success": True, "message": "ok", "data": {"n": run.data["n"]}}

    ids = [await jobs.submit(queue, queue, {"n": i}) for i in range(120)]
    running = Running(redis_url, queue, process, concurrency=4)
    try:
        states = [await finished(jobs, queue, job_id) for job_id in ids]
    finally:
        await running.close()
    assert [s.state for s in states] == ["completed"] * 120
    assert [s.result["data"]["n"] for s in states if s.result] == list(range(120))
    assert sorted(ran) == sorted(ids)  # each once
    assert scripts.count("moveToFinished") == 120
    assert scripts.count("moveToActive") <= 2 * 4  # the slots' first jobs, not one per job


async def test_an_idle_worker_fetches_new_jobs_one_at_a_time(
    redis_url: str, jobs: BullmqJobs, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs arriving one by one at an idle worker: fetched one at a time, after the wait on the
    queue's marker (python bullmq fetched once per free slot: up to twice its concurrency of
    `moveToActive` calls for every job that arrived)."""
    scripts = ScriptCalls(monkeypatch)

    async def process(run: JobRun) -> dict[str, Any]:
        return {"success": True, "message": "ok", "data": {}}

    running = Running(redis_url, queue, process, concurrency=10)
    try:
        for i in range(8):
            state = await finished(jobs, queue, await jobs.submit(queue, queue, {"n": i}))
            assert state.state == "completed"
    finally:
        await running.close()
    assert scripts.count("moveToFinished") == 8
    # The job's, and one empty look after the marker that taking it set again (+ the first).
    assert scripts.count("moveToActive") <= 2 * 8 + 1


async def test_stopping_a_busy_worker_leaves_every_job_completed_or_waiting(
    redis_url: str, jobs: BullmqJobs, queue: str
) -> None:
    """A job fetched by the completion of another is run before the worker stops: none is left
    active (it would come back only after its lock expired) and none is failed."""
    done = 0

    async def process(run: JobRun) -> dict[str, Any]:
        nonlocal done
        await asyncio.sleep(0.005)
        done += 1
        return {"success": True, "message": "ok", "data": {}}

    ids = [await jobs.submit(queue, queue, {"n": i}) for i in range(200)]
    running = Running(redis_url, queue, process, concurrency=5)
    async with asyncio.timeout(30):
        while done < 20:
            await asyncio.sleep(0.005)
    await running.close()
    states = [await jobs.get(queue, job_id) for job_id in ids]
    kinds = {s.state for s in states if s is not None}
    assert kinds <= {"completed", "waiting"} and "completed" in kinds and "waiting" in kinds
    assert sum(s is not None and s.state == "completed" for s in states) == done


async def test_the_pipelined_connection_uses_the_urls_database(redis_url: str) -> None:
    with own_redis_db(redis_url) as own:
        fast = PipelinedRedis(own)
        plain = Redis.from_url(own)
        try:
            key = unique("pipelined")
            assert await fast.execute("SET", key, "here") == "OK"
            assert await plain.get(key) == b"here"
            assert await fast.execute("GET", key) == "here"
        finally:
            await fast.aclose()
            await plain.aclose()


async def test_a_worker_whose_connections_are_cut_takes_the_next_job_at_once(
    redis_url: str, jobs: BullmqJobs, queue: str
) -> None:
    """Connections cut while the worker waits for jobs (a Redis restart, a proxy): the wait is
    made again on a new connection, not after python bullmq's `runRetryDelay` (set here to
    10 minutes, so that the test would time out if it were used)."""

    async def process(job: Job, _token: str) -> dict[str, Any]:
        return {"success": True, "message": "ok", "data": {}}

    worker = FastWorker(
        queue,
        process,
        {"connection": redis_url, "prefix": "bull", "autorun": False, "runRetryDelay": 600_000},
    )
    await worker.blockingRedisConnection.getRedisVersion()
    running = asyncio.ensure_future(worker.run())
    admin = Redis.from_url(redis_url, decode_responses=True)
    try:
        first = await finished(jobs, queue, await jobs.submit(queue, queue, {}))
        assert first.state == "completed"
        clients = await admin.client_list()
        ours = [c["id"] for c in clients if c.get("name") == worker.clientName]
        assert len(ours) >= 2  # the pipelined connections at least
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        second = await finished(jobs, queue, await jobs.submit(queue, queue, {}))
        assert second.state == "completed"
    finally:
        await worker.close(force=True)  # a fetch retried after `runRetryDelay` would hold close
        await asyncio.wait_for(running, 30)
        await admin.aclose()
