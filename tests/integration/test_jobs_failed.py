"""The failed set of the BullMQ queues on the real Redis: secrets sealed at rest and opened only
for the re-driven run, the `gatehouse jobs` command and the admin HTTP door listing (without
data) and re-driving it, and a create-user job submitted again under the same id after it
completed: no second user, the first result. (Listing and re-driving through `ports.Jobs`, on
every queue: tests/contract/test_jobs.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.domain.codes import Purpose
from gatehouse.domain.crypto import generate_secrets_document, parse_secrets
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.bullmq_queues import BullmqJobs
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.job_data import REDACTED, SEALED
from gatehouse.jobs.worker import worker_role
from gatehouse.ports import JobRun, JobState
from gatehouse.selfservice.otp import store_code
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.schema import users
from tests.conftest import unique
from tests.e2e.stack import own_redis_db
from tests.unit.helpers import offline_settings

SECRET = "hunter2 hunter2 hunter2"
KEY = "an-admin-key-of-forty-characters-0123456"
OK = {"success": True, "message": "ok", "data": {}}


async def until(check: Any, timeout: float = 30) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.02)
    return found


async def state_of(jobs: BullmqJobs, queue: str, job_id: str, state: str) -> JobState:
    async def check() -> JobState | None:
        found = await jobs.get(queue, job_id)
        return found if found is not None and found.state == state else None

    found: JobState = await until(check)
    return found


async def raw_data(redis_url: str, queue: str, job_id: str) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return json.loads(await client.hget(f"bull:{queue}:{job_id}", "data") or "null")
    finally:
        await client.aclose()


async def test_a_failed_jobs_secrets_are_sealed_at_rest_and_opened_for_its_re_driven_run(
    redis_url: str,
) -> None:
    queue = unique("failed-queue")
    keyring = parse_secrets(generate_secrets_document()).keyring()
    jobs = BullmqJobs(redis_url, attempts=2, backoff_ms=10)
    runs: list[JobRun] = []
    broken = True

    async def process(run: JobRun) -> dict[str, Any]:
        runs.append(run)
        if broken:
            raise ConnectionError("database away")
        return OK

    stop = asyncio.Event()
    worker = asyncio.ensure_future(
        BullmqWorkers(redis_url, keyring=keyring).work([queue], process, stop, 2)
    )
    try:
        data = {"email": "ada@example.com", "password": SECRET, "nested": {"token": "eyJ.a.b"}}
        job_id = await jobs.submit(queue, "create", data, job_id=unique("job"))
        await state_of(jobs, queue, job_id, "failed")

        async def sealed() -> Any:
            at_rest = await raw_data(redis_url, queue, job_id)
            return at_rest if str(at_rest["password"]).startswith(SEALED) else None

        at_rest = await until(sealed)  # sealed, not blanked, and no secret in clear
        assert at_rest["email"] == "ada@example.com" and SECRET not in json.dumps(at_rest)
        assert at_rest["nested"]["token"].startswith(SEALED)

        broken = False
        assert await jobs.retry(queue, [job_id]) == [job_id]
        await state_of(jobs, queue, job_id, "completed")
        assert runs[-1].data == data  # opened for the run

        async def blanked() -> Any:
            at_rest = await raw_data(redis_url, queue, job_id)
            return at_rest if at_rest["password"] == REDACTED else None

        assert (await until(blanked))["nested"]["token"] == REDACTED
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await jobs.close()


# --- the command and the HTTP door on the real queues -----------------------------------------


def settings_for(tmp: Path, redis_url: str) -> Settings:
    return offline_settings(
        tmp,
        redis_url=redis_url,
        job_attempts=1,
        job_submit_timeout_seconds=2,
        admin_token=KEY,
        rate_limits={},
        answer_floor_ms=0,
        hash_workers=1,
    )


@pytest.fixture
async def services(tmp_path: Path, redis_url: str) -> AsyncIterator[Services]:
    with own_redis_db(redis_url) as own:  # the queue names are the real ones
        made = build(settings_for(tmp_path, own))
        await upgrade(made.engine)
        try:
            yield made
        finally:
            await made.aclose()


async def fail(services: Services, job_id: str) -> None:
    """A read-user job that fails for good (a worker whose database is away)."""

    async def broken(*_: Any) -> dict[str, Any]:
        raise ConnectionError("database away")

    stop = asyncio.Event()
    worker = asyncio.ensure_future(worker_role(["read-user"], broken)(services)(stop))
    try:
        await services.jobs.submit("read-user", "read-user", {"token": SECRET}, job_id)
        await state_of(services.jobs, "read-user", job_id, "failed")  # type: ignore[arg-type]
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)


async def test_gatehouse_jobs_lists_and_re_drives_the_failed_set(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gatehouse.entrypoints.cli import app

    ids = [unique("cli-job-0123456789") for _ in range(3)]
    for job_id in ids:
        await fail(services, job_id)
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "GATEHOUSE_REDIS_URL": services.settings.redis_url,
        "GATEHOUSE_DATABASE_URL": services.settings.database_url,
        "GATEHOUSE_SECRETS_FILE": str(services.settings.secrets_file),
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["jobs", *args], catch_exceptions=False)

    listed = await asyncio.to_thread(run, "failed", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["job_id"] for r in rows] == ids[::-1]  # every queue, the most recent first
    assert rows[0] == {
        "job_id": ids[2],
        "queue": "read-user",
        "name": "read-user",
        "attempts_made": 1,
        "failed_reason": "ConnectionError",  # the kind of error, never its text
        "failed_at": rows[0]["failed_at"],
    }
    assert SECRET not in listed.output
    text = await asyncio.to_thread(run, "failed", "--queue", "read-user", "--limit", "1")
    assert text.exit_code == 0 and ids[2] in text.stdout and ids[0] not in text.stdout

    one = await asyncio.to_thread(run, "retry", "--queue", "read-user", ids[0], "no-such-job")
    assert one.exit_code == 1 and f"read-user\t{ids[0]}" in one.stdout  # moved, and one missing
    assert "no-such-job" in one.output
    assert (await services.jobs.get("read-user", ids[0])).state == "waiting"  # type: ignore[union-attr]
    every = await asyncio.to_thread(run, "retry", "--all")
    assert every.exit_code == 0, every.output
    assert sorted(every.stdout.split()) == sorted(["read-user", ids[1], "read-user", ids[2]])
    assert await services.jobs.failed("read-user") == []


async def test_the_admin_door_lists_and_re_drives_on_redis(services: Services) -> None:
    job_id = unique("http-job-0123456789")
    await fail(services, job_id)
    auth = {"Authorization": f"Bearer {KEY}"}
    transport = httpx.ASGITransport(app=create_app(services, close_services=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        listed = await http.get("/api/admin/jobs/read-user/failed", headers=auth)
        assert listed.status_code == 200, listed.text
        assert [j["job_id"] for j in listed.json()["data"]["jobs"]] == [job_id]
        assert SECRET not in listed.text
        refused = await http.post(f"/api/admin/jobs/read-user/{job_id}/retry")
        assert refused.status_code == 401
        moved = await http.post(f"/api/admin/jobs/read-user/{job_id}/retry", headers=auth)
        assert moved.status_code == 200, moved.text
        waiting = await http.post(f"/api/admin/jobs/read-user/{job_id}/retry", headers=auth)
        assert waiting.status_code == 409 and "waiting" in waiting.json()["message"]
        empty = await http.post("/api/admin/jobs/read-user/retry-all", headers=auth)
        assert empty.json()["data"]["job_ids"] == []


# --- idempotency by job id --------------------------------------------------------------------


async def test_a_create_user_job_submitted_again_after_it_completed_is_a_no_op(
    services: Services,
) -> None:
    ctx = services.ctx
    email = f"{unique('again')}@example.com"
    code = "493027"
    purpose = Purpose.REGISTER.value
    await store_code(ctx, purpose, email, code)
    data = {"email": email, "otp": code, "password": SECRET, "name": "Ada"}
    job_id = unique("create-user-0123456789")
    stop = asyncio.Event()
    worker = asyncio.ensure_future(worker_role(["create-user"])(services)(stop))
    try:
        assert await services.jobs.submit("create-user", "create-user", data, job_id) == job_id
        first = await state_of(services.jobs, "create-user", job_id, "completed")  # type: ignore[arg-type]
        assert first.result is not None and first.result["success"] is True, first.result
        # The producer sends it again (a retry after a timeout, a replayed message), even with
        # other data: the same id is the same job.
        again = {**data, "password": "another password entirely", "name": "Mallory"}
        assert await services.jobs.submit("create-user", "create-user", again, job_id) == job_id
        await asyncio.sleep(0.5)  # a worker is running: a second run would have happened now
        second = await services.jobs.get("create-user", job_id)
        assert second == first  # same state, same result, still one attempt
        async with services.engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(users).where(users.c.email == email)
            )
        assert count == 1
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
