"""Jobs under faults, with `gatehouse worker` and `gatehouse api` as processes on PostgreSQL and
Redis: a worker killed with SIGKILL in the middle of create-user jobs (every job completes, each
user exists once), and a Redis restarted under queued jobs (they survive in the AOF; code
checks and rate limits fail closed with 503 while it is down; all recovers by itself).

Each test prints what it observed: counts and recovery times."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from bullmq import Job, Queue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.bootstrap import build
from gatehouse.config import DEFAULT_RATE_LIMITS, Settings
from gatehouse.domain import events
from gatehouse.domain.codes import Purpose
from gatehouse.selfservice.otp import store_code
from gatehouse.storage.schema import outbox, pending_registrations, users
from tests.conftest import free_port, unique
from tests.e2e.stack import Role, Stack, own_redis_db

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery staple"
REGISTER = Purpose.REGISTER.value
PROCESSED = re.compile(r"processed job create-user/(\S+) \(success=True\)")
STALLED = re.compile(r"job create-user/(\S+) stalled")
FINAL = ("completed", "failed")
# Short locks so that a dead worker's jobs come back in seconds (production: 30 s and 30 s).
FAST_RECOVERY = {
    "GATEHOUSE_JOB_LOCK_DURATION_MS": "3000",
    "GATEHOUSE_JOB_STALLED_INTERVAL_MS": "1000",
    # One password hash at a time: create-user jobs queue on the hasher with their codes
    # already spent, which is where a kill hurts most.
    "GATEHOUSE_HASH_WORKERS": "1",
}


@contextlib.contextmanager
def stopped_at_exit(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.stop()


def wait_role(role: Role, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not Stack._ready(role):
        if role.popen.poll() is not None:
            raise AssertionError(f"{role.name} exited:\n{role.text()}")
        assert time.monotonic() < deadline, f"{role.name} not ready:\n{role.text()}"
        time.sleep(0.1)


async def seed_codes(stack: Stack, count: int) -> list[tuple[str, str]]:
    """`count` new (email, sign-up code) pairs, with their codes stored."""
    pairs = [(f"{unique('fault')}@example.com", f"{n:06d}") for n in range(count)]
    await put_codes(stack, pairs)
    return pairs


async def put_codes(stack: Stack, pairs: list[tuple[str, str]]) -> None:
    """Store sign-up codes as the verification job would (the same HMAC subject and hash,
    under the stack's secrets, bound to the email's live sign-up if any), in the stack's
    Redis."""
    env = stack.env
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=env["GATEHOUSE_DATABASE_URL"],
        redis_url=env["GATEHOUSE_REDIS_URL"],
        secrets_file=Path(env["GATEHOUSE_SECRETS_FILE"]),
        kafka_bootstrap_servers="",
    )
    services = build(settings)
    try:
        ctx = services.ctx
        for email, code in pairs:
            async with ctx.reader() as uow:
                pending = await uow.pending.get_by_email(email)
            binding = pending.id if pending else ""
            assert await store_code(ctx, REGISTER, email, code, binding) == ctx.policy.code_attempts
    finally:
        await services.aclose()


async def submit_create_users(queue: Queue, pairs: list[tuple[str, str]]) -> list[str]:
    ids = []
    for email, code in pairs:
        job_id = unique("create-user-job")
        data = {"email": email, "otp": code, "password": PASSWORD, "name": "Ada"}
        options = {"jobId": job_id, "attempts": 3, "backoff": {"type": "exponential", "delay": 500}}
        await queue.add("create-user", data, options)
        ids.append(job_id)
    return ids


async def final_jobs(queue: Queue, ids: list[str], timeout: float = 60) -> dict[str, Job]:
    """Every job once it is completed or failed (each read again after its state is final)."""
    done: dict[str, Job] = {}
    async with asyncio.timeout(timeout):
        while len(done) < len(ids):
            for job_id in ids:
                if job_id not in done and await queue.getJobState(job_id) in FINAL:
                    job = await Job.fromId(queue, job_id)
                    assert job is not None
                    done[job_id] = job
            await asyncio.sleep(0.05)
    return done


async def users_by_email(database: str) -> dict[str, list[str]]:
    engine = create_async_engine(database)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(users.c.email, users.c.id))).all()
            pending = await conn.scalar(select(func.count()).select_from(pending_registrations))
            assert pending == 0  # nothing half-created
            events_rows = (
                await conn.execute(
                    select(outbox.c.message_key, outbox.c.payload).where(
                        outbox.c.topic == events.USER_EVENTS
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    found: dict[str, list[str]] = {}
    for email, user_id in rows:
        found.setdefault(email, []).append(user_id)
    # Every user has exactly one `verified` event in the outbox: the state change was written
    # once, whatever ran twice.
    verified = [
        key for key, payload in events_rows if json.loads(payload)["type"] == events.VERIFIED
    ]
    assert sorted(verified) == sorted(i for ids in found.values() for i in ids)
    return found


# --- a worker killed in the middle of create-user jobs -----------------------------------------


async def test_a_worker_killed_mid_create_user_loses_no_job_and_creates_no_duplicate(
    redis_url: str, postgres_database: str, tmp_path: Path
) -> None:
    count = 60
    with own_redis_db(redis_url) as own_redis:
        stack = Stack.configure(tmp_path, postgres_database, own_redis, "", "")
        stack.env.update(FAST_RECOVERY)
        queue = Queue("create-user", {"connection": own_redis})
        with stopped_at_exit(stack):
            try:
                pairs = await seed_codes(stack, count)
                ids = await submit_create_users(queue, pairs)
                first = stack.start("worker1", "worker")
                wait_role(first)
                async with asyncio.timeout(60):  # some done, some in the middle
                    while True:
                        counts = await queue.getJobCounts("completed", "active")
                        if counts["completed"] >= count // 4 and counts["active"] >= 2:
                            break
                        await asyncio.sleep(0.01)
                first.popen.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                first.popen.wait(10)
                done_before, active_at_kill = counts["completed"], counts["active"]
                second = stack.start("worker2", "worker")
                wait_role(second)
                ready_after = time.monotonic() - killed_at
                done = await final_jobs(queue, ids)
                recovered_after = time.monotonic() - killed_at
            finally:
                await queue.close()
        found = await users_by_email(postgres_database)
        client = redis.Redis.from_url(own_redis)
        try:
            stalled = {i for i in ids if int(client.hget(f"bull:create-user:{i}", "stc") or 0)}
        finally:
            client.close()
        twice = set(PROCESSED.findall(first.text())) & set(PROCESSED.findall(second.text()))
        results = [done[i].returnvalue for i in ids]
        failed = sum(1 for i in ids if done[i].failedReason)
        succeeded = sum(1 for r in results if isinstance(r, dict) and r.get("success") is True)
        print(
            f"\nworker SIGKILL mid create-user: jobs {count}, completed before the kill "
            f"{done_before}, active at the kill {active_at_kill}; in the end completed "
            f"{count - failed} (success {succeeded}), failed {failed}, "
            f"stalled and re-run {len(stalled)} (of which {len(twice)} had already committed), "
            f"users {sum(len(v) for v in found.values())}, duplicates "
            f"{sum(len(v) - 1 for v in found.values())}; second worker ready "
            f"{ready_after:.1f} s and every job final {recovered_after:.1f} s after the kill"
        )
        assert active_at_kill >= 1 and stalled, "the kill must land in the middle of jobs"
        # The stalled-job check brought them back (the second worker's, or the first one's for
        # a job it had seen stall before its death).
        assert stalled <= set(STALLED.findall(second.text() + first.text()))
        for job_id, (email, _code), result in zip(ids, pairs, results, strict=True):
            assert result is not None and result["success"] is True, (job_id, result)
            assert result["data"]["user"]["email"] == email
            assert found[email] == [result["data"]["user"]["id"]]  # that very user, once
        assert failed == 0 and succeeded == count and len(found) == count
        assert "Traceback" not in second.text()


# --- Redis restarted --------------------------------------------------------------------------


class OwnRedis:
    """A redis-server of this test's own (AOF on, no RDB), to be shut down and started again
    on the same directory; the suite's shared Redis is never touched."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "redis.log").open("ab")
        self.popen = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with redis.Redis.from_url(self.url) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                assert self.popen.poll() is None, (self.dir / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: no RDB snapshot; what comes back is what the AOF holds."""
        assert self.popen is not None
        with contextlib.suppress(redis.ConnectionError), redis.Redis.from_url(self.url) as client:
            client.shutdown(nosave=True)
        self.popen.wait(30)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def test_queued_jobs_survive_a_redis_restart_and_checks_fail_closed_meanwhile(
    own_redis: OwnRedis, postgres_database: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    count = 20
    stack = Stack.configure(tmp_path, postgres_database, own_redis.url, "", "")
    # Verification is not rate limited here, so that its 503 comes from the code check itself;
    # login keeps its limits, so that its 503 comes from the rate limiter.
    limits = {**DEFAULT_RATE_LIMITS, "verify_ip": "", "verify_account": ""}
    stack.env.update(
        {
            "GATEHOUSE_RATE_LIMITS": json.dumps(limits),
            "GATEHOUSE_JOB_SUBMIT_TIMEOUT_SECONDS": "2",
            **FAST_RECOVERY,
        }
    )
    with stopped_at_exit(stack):
        api = stack.start("api", "api", port=free_port())
        stack.wait_ready()
        login = {"email": "nobody@example.com", "password": "not the password 123"}
        verify = {"email": "nobody@example.com", "otp": "123456"}
        assert (await http.post(f"{api.url}/api/auth/login", json=login)).status_code == 401
        assert (await http.post(f"{api.url}/api/auth/verify-otp", json=verify)).status_code == 400

        pairs = await seed_codes(stack, count)
        queue = Queue("create-user", {"connection": own_redis.url})
        try:
            ids = await submit_create_users(queue, pairs)  # no worker yet: they wait
            assert (await queue.getJobCounts("wait"))["wait"] == count
        finally:
            await queue.close()

        own_redis.shutdown()
        down_at = time.monotonic()
        answers: dict[str, list[int]] = {}
        probes = 0
        while probes < 3 or time.monotonic() - down_at < 3:  # down for a few seconds
            probes += 1
            for name, reply in {
                "verify-otp": await http.post(f"{api.url}/api/auth/verify-otp", json=verify),
                "login": await http.post(f"{api.url}/api/auth/login", json=login),
                "register": await http.post(
                    f"{api.url}/api/auth/register",
                    json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD},
                ),
                "jobs": await http.post(
                    f"{api.url}/api/jobs/read-user", json={"data": {"token": "t"}}
                ),
                "ready": await http.get(f"{api.url}/health/ready"),
            }.items():
                answers.setdefault(name, []).append(reply.status_code)
                assert reply.status_code == 503, (name, reply.status_code, reply.text)
                if name != "ready":
                    assert reply.json()["code"] == "unavailable" and reply.headers["retry-after"]
            await asyncio.sleep(0.2)
        down_for = time.monotonic() - down_at

        own_redis.start()  # the same port and directory: the AOF is replayed
        restarted_at = time.monotonic()
        async with asyncio.timeout(60):  # the same api process, not restarted
            while (await http.post(f"{api.url}/api/auth/login", json=login)).status_code == 503:
                await asyncio.sleep(0.1)
        api_back_after = time.monotonic() - restarted_at
        async with asyncio.timeout(60):
            while (await http.get(f"{api.url}/health/ready")).status_code != 200:
                await asyncio.sleep(0.1)
        ready_after = time.monotonic() - restarted_at
        assert api.popen.poll() is None
        assert (await http.post(f"{api.url}/api/auth/login", json=login)).status_code == 401
        assert (await http.post(f"{api.url}/api/auth/verify-otp", json=verify)).status_code == 400

        queue = Queue("create-user", {"connection": own_redis.url})
        try:
            survived = (await queue.getJobCounts("wait"))["wait"]
            assert survived == count
            worker = stack.start("worker", "worker")
            wait_role(worker)
            done = await final_jobs(queue, ids)
            ran_after = time.monotonic() - restarted_at
        finally:
            await queue.close()
        results = [done[i].returnvalue for i in ids]
        assert all(r is not None and r["success"] is True for r in results), results
        found = await users_by_email(postgres_database)
        assert sorted(found) == sorted(email for email, _ in pairs)
        assert all(len(v) == 1 for v in found.values())

        # A whole sign-up over HTTP works again, with its code checked in Redis.
        email = f"{unique('after')}@example.com"
        body = {"name": "Ada", "email": email, "password": PASSWORD}
        assert (await http.post(f"{api.url}/api/auth/register", json=body)).status_code == 202
        code = "314159"  # no courier here: the mailed code is replaced by a known one
        await put_codes(stack, [(email, code)])
        created = await http.post(
            f"{api.url}/api/auth/verify-otp", json={"email": email, "otp": code}
        )
        assert created.status_code == 201, created.text
        print(
            f"\nRedis restarted: jobs queued {count}, survived {survived}, completed "
            f"{sum(1 for r in results if r and r['success'])}, lost {count - survived}, "
            f"users {len(found)}, duplicates {sum(len(v) - 1 for v in found.values())}; "
            f"while down ({down_for:.1f} s): "
            + ", ".join(f"{n} {len(c)}x {c[0]}" for n, c in answers.items())
            + f"; api answering again {api_back_after:.1f} s and ready {ready_after:.1f} s "
            f"after the restart, every queued job done {ran_after:.1f} s after it"
        )
