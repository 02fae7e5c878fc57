"""The in-process queue of the embedded serve (`MemoryJobs`): its bounded table; and the worker's
processor: what gets pushed to which room. (What every job queue does, `MemoryJobs` included:
tests/contract/test_jobs.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gatehouse.errors import JobFailed, Unavailable
from gatehouse.jobs.embedded import MemoryJobs
from gatehouse.jobs.worker import GAVE_UP, JobProcessor
from gatehouse.ports import JobRun, JobState
from gatehouse.selfservice.context import FlowContext
from tests.fakes import MemoryNotifier

Process = Callable[[JobRun], Awaitable[dict[str, Any]]]
OK = {"success": True, "message": "done", "data": {}}


class Working:
    def __init__(self, jobs: MemoryJobs, queues: list[str], process: Process, concurrency: int):
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(jobs.work(queues, process, self.stop, concurrency))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def running() -> AsyncIterator[list[Working]]:
    started: list[Working] = []
    yield started
    for working in started:
        await working.close()


def work(
    running: list[Working],
    jobs: MemoryJobs,
    process: Process,
    queues: list[str] | None = None,
    concurrency: int = 5,
) -> Working:
    working = Working(jobs, queues or ["q"], process, concurrency)
    running.append(working)
    return working


async def finished(jobs: MemoryJobs, job_id: str, queue: str = "q") -> JobState:
    async with asyncio.timeout(10):
        while True:
            state = await jobs.get(queue, job_id)
            assert state is not None
            if state.state in ("completed", "failed"):
                return state
            await asyncio.sleep(0.001)


async def test_the_table_is_bounded(running: list[Working]) -> None:
    jobs = MemoryJobs(capacity=3)
    first = await jobs.submit("q", "x", {})
    await jobs.submit("q", "x", {})
    await jobs.submit("q", "x", {})
    with pytest.raises(Unavailable):  # three unfinished jobs: no room, no silent loss
        await jobs.submit("q", "x", {})

    async def process(run: JobRun) -> dict[str, Any]:
        return OK

    work(running, jobs, process)
    await finished(jobs, first)
    newest = await jobs.submit("q", "x", {})  # the oldest finished job makes room
    assert await jobs.get("q", first) is None
    assert (await jobs.get("q", newest)) is not None


# --- the processor -------------------------------------------------------------------------


def run_of(data: Any, *, final: bool = False, queue: str = "read-user") -> JobRun:
    return JobRun("job-1", queue, queue, data, 1, final)


def processor(
    result: dict[str, Any] | Exception, notifier: MemoryNotifier | None = None
) -> tuple[JobProcessor, MemoryNotifier]:
    notifier = notifier or MemoryNotifier()

    async def handler(
        _ctx: FlowContext, _queue: str, _name: str, _data: Any, _job_id: str
    ) -> dict[str, Any]:
        if isinstance(result, Exception):
            raise result
        return result

    return JobProcessor(ctx=None, notifier=notifier, handler=handler), notifier  # type: ignore[arg-type]


async def test_a_result_is_pushed_to_the_room_it_names_with_its_job_and_queue() -> None:
    result = {
        "success": True,
        "message": "Profile",
        "data": {"user": {"id": "u1"}},
        "user_id": "u1",
    }
    process, notifier = processor(result)
    assert await process(run_of({"token": "t", "notify": "sid-123"})) == result
    assert await process(run_of({"token": "t", "notify": "user:u1"})) == result
    assert await process(run_of({"token": "t"})) == result  # no room asked: none pushed
    pushed = {**result, "job_id": "job-1", "queue": "read-user"}
    assert list(notifier.sent) == [
        ("sid-123", "notification", pushed),
        ("user:u1", "notification", pushed),
    ]


async def test_a_refusal_is_pushed_but_never_into_another_users_room() -> None:
    refusal = {"success": False, "message": "Invalid or expired token", "data": {}}
    process, notifier = processor(refusal)
    await process(run_of({"token": "forged", "notify": "user:victim"}))
    assert list(notifier.sent) == []
    await process(run_of({"token": "forged", "notify": "sid-9"}))
    assert [(room, note["success"]) for room, _e, note in notifier.sent] == [("sid-9", False)]


async def test_an_infrastructure_failure_raises_a_safe_reason_and_is_told_only_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    process, notifier = processor(Unavailable("Database unavailable"))
    data = {"email": "ada@example.com", "password": "hunter2 hunter2", "notify": "sid-1"}
    with pytest.raises(JobFailed, match=r"^Database unavailable$"):
        await process(run_of(data))
    assert list(notifier.sent) == []  # a retry follows: nothing to tell yet
    process, notifier = processor(KeyError("password: hunter2 hunter2"))
    with pytest.raises(JobFailed, match=r"^KeyError$"):  # the error's text stays out of Redis
        await process(run_of(data, final=True))
    assert list(notifier.sent) == [
        (
            "sid-1",
            "notification",
            {
                "success": False,
                "message": GAVE_UP,
                "code": "job_failed",
                "data": {},
                "job_id": "job-1",
                "queue": "read-user",
            },
        )
    ]
    assert "gave up (KeyError)" in caplog.text and "hunter2" not in caplog.text  # never logged


async def test_a_lost_push_does_not_fail_the_job() -> None:
    class Down(MemoryNotifier):
        async def emit(self, room: str, event: str, payload: dict[str, Any]) -> None:
            raise ConnectionError("redis away")

    result = {"success": True, "message": "ok", "data": {}}
    process, _ = processor(result, Down())
    assert await process(run_of({"notify": "sid-1"})) == result


# --- the command --------------------------------------------------------------------------


def test_gatehouse_worker_refuses_unknown_queues_and_a_missing_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gatehouse.entrypoints.cli import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("GATEHOUSE_REDIS_URL", raising=False)
    runner = CliRunner()
    unknown = runner.invoke(app, ["worker", "--queues", "read-user,launch-missiles"])
    assert unknown.exit_code == 2 and "launch-missiles" in unknown.output
    embedded = runner.invoke(app, ["worker"])
    assert embedded.exit_code == 2 and "GATEHOUSE_REDIS_URL" in embedded.output


async def test_the_room_hears_the_whole_result_and_the_queue_keeps_it_without_credentials() -> None:
    data = {"token": "access.jwt", "refresh_token": "refresh", "user": {"phone": "+14155550123"}}
    result = {"success": True, "message": "Logged in successfully", "data": data, "user_id": "u1"}
    process, notifier = processor(result)
    kept = await process(run_of({"notify": "sid-1"}, queue="verify-user"))
    [(_room, _event, pushed)] = notifier.sent
    assert pushed["data"] == data  # the producer's own socket gets the credentials
    assert kept["data"]["token"] == kept["data"]["refresh_token"] == "[redacted]"
    assert kept["data"]["user"]["phone"] == "+1415\u2022\u2022\u20220123"
    assert kept["user_id"] == "u1" and kept["message"] == "Logged in successfully"
