"""On the real Redis with BullMQ and the real flows: what a finished job leaves in Redis (its
returnvalue read straight with redis-py) holds no token and no full phone, the job door answers
the same, finished jobs of producers that chose no retention are bounded by the worker's, and a
producer writing straight into Redis meets the per-account limit (a refusal, not a retry)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import Queue
from redis.asyncio import Redis

from gatehouse.bootstrap import Services, build
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.worker import worker_role
from gatehouse.ports import JobRun
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.storage.migrate import upgrade
from tests.conftest import unique
from tests.e2e.stack import own_redis_db
from tests.integration.conftest import finished, verified_user
from tests.unit.helpers import offline_settings

PASSWORD = "correct horse battery staple"
PHONE = "+14155550123"


@dataclasses.dataclass
class Running:
    services: Services
    redis: Redis
    http: httpx.AsyncClient

    async def returnvalue(self, queue: str, job_id: str) -> tuple[str, dict[str, Any]]:
        """The job's returnvalue as Redis holds it: BullMQ's hash field, read with redis-py."""
        raw = await self.redis.hget(f"bull:{queue}:{job_id}", "returnvalue")
        assert raw is not None, (queue, job_id)
        text = raw.decode()
        return text, json.loads(text)

    async def run(self, queue: str, data: dict[str, Any]) -> str:
        """A job put straight into Redis by the python BullMQ producer (no HTTP door)."""
        job_id = await self.services.jobs.submit(queue, queue, data, unique("job-at-rest"))
        state = await finished(self.services.jobs, queue, job_id)
        assert state.state == "completed" and state.attempts_made == 1, state
        return job_id

    async def user(self) -> str:
        """A verified user with a phone, signed up through the flows; returns the email."""
        email, _user = await verified_user(self.services, "rest", PASSWORD, PHONE)
        return email


@pytest.fixture
async def running(tmp_path: Path, redis_url: str) -> AsyncIterator[Running]:
    with own_redis_db(redis_url) as own:
        settings = offline_settings(
            tmp_path,
            redis_url=own,
            rate_limits={"login_account": "2/minute"},
            answer_floor_ms=0,
            hash_workers=1,
        )
        services = build(settings)
        await upgrade(services.engine)
        stop = asyncio.Event()
        worker = asyncio.ensure_future(worker_role()(services)(stop))
        redis = Redis.from_url(own)
        try:
            transport = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                yield Running(services, redis, http)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
            await redis.aclose()
            await services.aclose()


async def test_a_sign_in_and_a_profile_rest_in_redis_without_tokens_or_the_phone(
    running: Running,
) -> None:
    email = await running.user()
    signed_in = await running.run("verify-user", {"email": email, "password": PASSWORD})
    text, stored = await running.returnvalue("verify-user", signed_in)
    assert stored["success"] is True and stored["message"] == "Logged in successfully"
    assert stored["data"]["token"] == stored["data"]["refresh_token"] == "[redacted]"
    assert stored["data"]["user"]["email"] == email
    assert "eyJ" not in text and PHONE not in text  # no JWT, no full phone anywhere

    # A token of its own (not one of the results': those rest blanked), with no limit spent.
    ctx = dataclasses.replace(running.services.ctx, limiter=LimitsRateLimiter({}))
    token = (await login_flow.login(ctx, email=email, password=PASSWORD)).token
    profile = await running.run("read-user", {"token": token})
    text, stored = await running.returnvalue("read-user", profile)
    assert stored["data"]["user"]["phone"] == "+1415\u2022\u2022\u20220123"
    assert PHONE not in text and token not in text

    # The job door answers what Redis holds.
    for queue, job_id in (("verify-user", signed_in), ("read-user", profile)):
        reply = await running.http.get(f"/api/jobs/{queue}/{job_id}")
        assert reply.status_code == 200, reply.text
        assert "eyJ" not in reply.text and PHONE not in reply.text
    answered = (await running.http.get(f"/api/jobs/verify-user/{signed_in}")).json()["data"]
    assert answered["result"]["data"]["refresh_token"] == "[redacted]"


async def test_a_producer_straight_into_redis_meets_the_per_account_limit(
    running: Running,
) -> None:
    email = await running.user()
    data = {"email": email, "password": PASSWORD}
    outcomes = []
    for _ in range(3):  # login_account: two a minute
        job_id = await running.run("verify-user", data)
        _text, stored = await running.returnvalue("verify-user", job_id)
        outcomes.append((stored["success"], stored.get("code")))
    assert outcomes == [(True, None), (True, None), (False, "rate_limited")]
    # The HTTP route shares the counter: this account is refused there too.
    reply = await running.http.post("/api/auth/login", json=data)
    assert reply.status_code == 429 and reply.json()["code"] == "rate_limited"


async def test_finished_jobs_whose_producer_chose_no_retention_are_bounded_by_the_worker(
    redis_url: str,
) -> None:
    queue = unique("retention")

    async def process(run: JobRun) -> dict[str, Any]:
        return {"success": True, "message": "ok", "data": {}}

    with own_redis_db(redis_url) as own:
        stop = asyncio.Event()
        workers = BullmqWorkers(own, retention_seconds=3600, retention_count=1)
        working = asyncio.ensure_future(workers.work([queue], process, stop, 1))
        producer = Queue(queue, {"connection": own})  # a producer that sets no retention
        redis = Redis.from_url(own)
        try:
            ids = [unique(f"n{n}") for n in range(3)]
            for job_id in ids:
                await producer.add(queue, {}, {"jobId": job_id})
            async with asyncio.timeout(30):  # one at a time, in order: the last one ends last
                while not await redis.hexists(f"bull:{queue}:{ids[-1]}", "finishedOn"):
                    await asyncio.sleep(0.02)
            left = [bool(await redis.exists(f"bull:{queue}:{job_id}")) for job_id in ids]
            assert left == [False, False, True]  # count 1: only the newest finished job is kept
        finally:
            stop.set()
            await asyncio.wait_for(working, 30)
            await producer.close()
            await redis.aclose()
