"""`ports.Jobs` and `ports.JobWorker` on the in-process queue (`MemoryJobs`) and on BullMQ
(`BullmqJobs`, `BullmqWorkers`): submit and read back, idempotent ids, retries with backoff and
the `final` flag, the failed set and its re-drive, concurrency, order, draining on stop."""

from __future__ import annotations

import asyncio
from typing import Any

from gatehouse.ports import JobRun, JobState
from tests.conftest import unique
from tests.contract.conftest import ATTEMPTS, Queues

OK = {"success": True, "message": "ok", "data": {}}


async def test_a_job_waits_then_runs_once_and_its_result_is_readable(queues: Queues) -> None:
    jobs, queue = queues.jobs, queues.queue
    runs: list[JobRun] = []

    async def process(run: JobRun) -> dict[str, Any]:
        runs.append(run)
        return {"success": True, "message": "done", "data": {"echo": run.data["n"]}}

    data = {"n": 7, "nested": {"list": [1, "two"]}}
    job_id = await jobs.submit(queue, "greet", data, job_id=unique("job"))
    data["n"] = 8  # the job holds what was submitted, not the caller's object
    assert await jobs.submit(queue, "greet", {"n": 9}, job_id=job_id) == job_id  # a no-op
    assert await jobs.get(queue, job_id) == JobState(job_id, queue, "greet", "waiting")
    assert await jobs.get(queue, "no-such-job") is None
    assert await jobs.get(unique("other-queue"), job_id) is None

    queues.work(process)
    state = await queues.finished(job_id)
    assert state.state == "completed" and state.attempts_made == 1 and state.name == "greet"
    assert state.result == {"success": True, "message": "done", "data": {"echo": 7}}
    assert state.failed_reason is None and state.finished_at is not None
    assert [(r.id, r.queue, r.name, r.attempt, r.final) for r in runs] == [
        (job_id, queue, "greet", 1, False)
    ]
    assert runs[0].data == {"n": 7, "nested": {"list": [1, "two"]}}

    # Submitted again once completed (a producer's retry after a timeout): still the same job,
    # not run again, its result unchanged.
    assert await jobs.submit(queue, "greet", {"n": 10}, job_id=job_id) == job_id
    await asyncio.sleep(0.2)  # a worker is running: a second run would have happened now
    assert await jobs.get(queue, job_id) == state and len(runs) == 1


async def test_minted_ids_are_distinct_and_a_refusal_completes_without_retry(
    queues: Queues,
) -> None:
    calls = 0

    async def refuse(run: JobRun) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"success": False, "message": "Invalid or expired token", "data": {}}

    first = await queues.jobs.submit(queues.queue, "read-user", {"token": "forged"})
    second = await queues.jobs.submit(queues.queue, "read-user", {"token": "forged"})
    assert isinstance(first, str) and first and first != second
    queues.work(refuse)
    for job_id in (first, second):
        state = await queues.finished(job_id)
        assert state.state == "completed" and state.attempts_made == 1
        assert state.result is not None and state.result["success"] is False
    assert calls == 2


async def test_a_raising_attempt_is_retried_and_only_the_last_one_is_final(
    queues: Queues,
) -> None:
    attempts: list[tuple[int, bool]] = []

    async def flaky(run: JobRun) -> dict[str, Any]:
        attempts.append((run.attempt, run.final))
        if run.attempt < ATTEMPTS:
            raise ConnectionError("database away")
        return OK

    queues.work(flaky)
    job_id = await queues.jobs.submit(queues.queue, "flaky", {})
    state = await queues.finished(job_id)
    assert state.state == "completed" and state.attempts_made == ATTEMPTS
    assert attempts == [(1, False), (2, False), (3, True)]
    assert state.result == OK
    assert state.failed_reason == "database away"  # the last failure's, kept


async def test_the_last_failed_attempt_fails_the_job(queues: Queues) -> None:
    async def broken(run: JobRun) -> dict[str, Any]:
        raise RuntimeError("still down")

    queues.work(broken)
    job_id = await queues.jobs.submit(queues.queue, "broken", {"n": 1})
    state = await queues.finished(job_id)
    assert state.state == "failed" and state.attempts_made == ATTEMPTS
    assert state.failed_reason == "still down" and state.result is None
    assert state.finished_at is not None


async def test_failed_jobs_are_listed_newest_first_and_re_driven_afresh(queues: Queues) -> None:
    jobs, queue = queues.jobs, queues.queue
    runs: list[JobRun] = []
    broken = True

    async def process(run: JobRun) -> dict[str, Any]:
        runs.append(run)
        if broken:
            raise ConnectionError("database away")
        return OK

    queues.work(process)
    first = await jobs.submit(queue, "create", {"email": "ada@example.com"}, job_id=unique("j"))
    await queues.finished(first)
    second = await jobs.submit(queue, "create", {"n": 2}, job_id=unique("j"))
    await queues.finished(second)

    listed = await jobs.failed(queue)
    assert [j.id for j in listed] == [second, first]
    assert listed[1] == await jobs.get(queue, first)
    assert listed[1].name == "create" and listed[1].state == "failed"
    assert listed[1].attempts_made == ATTEMPTS and listed[1].failed_reason == "database away"
    assert [j.id for j in await jobs.failed(queue, limit=1)] == [second]
    assert await jobs.failed(unique("other-queue")) == []

    broken = False
    assert await jobs.retry(queue, [first, "no-such-job"]) == [first]
    done = await queues.finished(first)
    assert done.state == "completed" and done.attempts_made == 1  # a fresh set of attempts
    assert done.failed_reason is None and done.result == OK
    assert (runs[-1].id, runs[-1].attempt, runs[-1].final) == (first, 1, False)
    assert runs[-1].data == {"email": "ada@example.com"}  # with its data
    assert await jobs.retry(queue, [first]) == []  # completed: nothing to re-drive
    assert await jobs.retry(queue) == [second]
    assert (await queues.finished(second)).state == "completed"
    assert await jobs.failed(queue) == []
    assert await jobs.retry(queue) == []


async def test_stopping_lets_the_jobs_in_flight_finish(queues: Queues) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(run: JobRun) -> dict[str, Any]:
        started.set()
        await release.wait()
        return OK

    working = queues.work(slow)
    job_id = await queues.jobs.submit(queues.queue, "slow", {})
    await asyncio.wait_for(started.wait(), 30)
    working.stop.set()  # SIGTERM arrives while the job runs
    await asyncio.sleep(0.05)
    assert not working.task.done()  # waits for the job ...
    release.set()
    await asyncio.wait_for(working.task, 30)
    state = await queues.jobs.get(queues.queue, job_id)  # ... which completes
    assert state is not None and state.state == "completed"


async def test_jobs_run_concurrently_up_to_the_limit_and_only_from_the_workers_queues(
    queues: Queues,
) -> None:
    active = peak = 0

    async def process(run: JobRun) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return OK

    elsewhere = unique("not-mine")
    ids = [await queues.jobs.submit(queues.queue, "x", {"i": i}) for i in range(12)]
    other = await queues.jobs.submit(elsewhere, "x", {})
    queues.work(process, concurrency=4)
    states = [await queues.finished(job_id) for job_id in ids]
    assert all(s.state == "completed" for s in states)
    assert 1 < peak <= 4
    assert (await queues.jobs.get(elsewhere, other)) == JobState(other, elsewhere, "x", "waiting")


async def test_one_at_a_time_jobs_run_in_the_order_submitted(queues: Queues) -> None:
    ran: list[int] = []

    async def process(run: JobRun) -> dict[str, Any]:
        ran.append(run.data["n"])
        return OK

    ids = [await queues.jobs.submit(queues.queue, "x", {"n": n}) for n in range(10)]
    queues.work(process, concurrency=1)
    for job_id in ids:
        await queues.finished(job_id)
    assert ran == list(range(10))
