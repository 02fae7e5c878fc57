"""The database restarted, then its connections cut (issue 5), under `gatehouse serve` on a
PostgreSQL cluster of the test's own: 503 (never 500) while it is stopped, no half-written user,
and recovery without restarting Gatehouse; after a cut the pool's pre-ping replaces the dead
connections before any request sees one. Jobs submitted meanwhile all complete."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gatehouse.domain import events
from tests.chaos import checks
from tests.chaos.conftest import Serve, ServeFactory
from tests.chaos.services import OwnKafka, OwnPostgres
from tests.conftest import MailSink, unique

pytestmark = pytest.mark.chaos

FIRST = 60  # sign-ups before the fault; half of them verify before it, half during it
STOPPED_FOR = 10.0
CUTTING_FOR = 5.0
RECOVERY_DEADLINE = 60.0  # a bound on waiting, not a target
JOBS = 5
# Jobs go in this long before the restart, so that retries 1 s, 2 s and 4 s apart span it. Not
# earlier: python bullmq 3.4's blocking wait for work (up to 10 s) outlasts redis-py 8's default
# 5 s socket timeout, so a retry due more than 5 s ahead waits minutes and an idle worker takes a
# new job only seconds late (reported with this test; the fix belongs to the worker's connection).
JOBS_BEFORE_RESTART = 3.0
KILL_BACKENDS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = 'gatehouse' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def email() -> str:
    return f"{unique('db-down')}@example.com"


class Client:
    """The routes the test drives, each answer counted per route."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self.calls: dict[str, checks.Calls] = {}

    def _count(self, route: str, reply: httpx.Response) -> int:
        return self.calls.setdefault(route, checks.Calls()).add(reply)

    async def register(self, address: str) -> int:
        return self._count("register", await checks.register(self.http, address))

    async def verify(self, address: str, code: str) -> int:
        reply = await self.http.post("/api/auth/verify-otp", json={"email": address, "otp": code})
        return self._count("verify", reply)

    async def login(self, address: str) -> int:
        reply = await self.http.post(
            "/api/auth/login", json={"email": address, "password": checks.PASSWORD}
        )
        return self._count("login", reply)

    async def get(self, path: str) -> httpx.Response:
        reply = await self.http.get(path)
        self._count(path, reply)
        return reply

    def statuses(self) -> dict[str, dict[int, int]]:
        return {route: dict(c.statuses) for route, c in self.calls.items()}

    def reset(self) -> dict[str, checks.Calls]:
        calls, self.calls = self.calls, {}
        return calls


async def codes_for(sink: MailSink, addresses: set[str], deadline: float) -> dict[str, str]:
    async def arrived() -> bool:
        return len(checks.codes_by_address(sink, addresses)) == len(addresses)

    await checks.wait_until(f"codes for {len(addresses)} addresses", arrived, deadline)
    return checks.codes_by_address(sink, addresses)


async def job_outcomes(client: Client, job_ids: list[str], deadline: float) -> list[dict[str, Any]]:
    finished: dict[str, dict[str, Any]] = {}
    unfinished: dict[str, dict[str, Any]] = {}

    async def all_final() -> bool:
        for job_id in set(job_ids) - set(finished):
            data = (await client.http.get(f"/api/jobs/verify-user/{job_id}")).json()["data"]
            if data["state"] in ("completed", "failed"):
                finished[job_id] = data
                unfinished.pop(job_id, None)
            else:
                unfinished[job_id] = data
        return len(finished) == len(job_ids)

    try:
        await checks.wait_until("the jobs to finish", all_final, deadline, every=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {list(unfinished.values())}") from None
    return list(finished.values())


async def test_database_restarted_then_connections_cut(
    own_postgres: OwnPostgres,
    own_kafka: OwnKafka,
    chaos_redis: str,
    mail_sink: MailSink,
    gatehouse_serve: ServeFactory,
    chaos_report: Callable[[str], None],
) -> None:
    # More tries than the outage needs, with BullMQ's exponential backoff.
    serve: Serve = gatehouse_serve(
        own_postgres.url,
        chaos_redis,
        own_kafka.bootstrap,
        mail_sink.url,
        GATEHOUSE_JOB_ATTEMPTS="12",
    )
    first = [email() for _ in range(FIRST)]
    before, during = first[: FIRST // 2], first[FIRST // 2 :]
    later: list[str] = []  # sign-ups attempted during and after the faults
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as http:
        client = Client(http)

        # Up: sign up, verify half of them.
        await checks.bounded(10, [(lambda e=e: client.register(e)) for e in first])
        codes = await codes_for(mail_sink, set(first), time.monotonic() + 60)
        await checks.bounded(10, [(lambda e=e: client.verify(e, codes[e])) for e in before])
        up = client.reset()
        assert {r: dict(c.statuses) for r, c in up.items()} == {
            "register": {202: FIRST},
            "verify": {201: FIRST // 2},
        }, {r: c.samples for r, c in up.items()}

        # Stopped: every call that needs the database answers 503, none 500.
        await asyncio.to_thread(own_postgres.stop)
        stopped_at = time.monotonic()
        jobs: list[str] = []
        round_ = 0
        while time.monotonic() < stopped_at + STOPPED_FOR:
            if not jobs and time.monotonic() > stopped_at + STOPPED_FOR - JOBS_BEFORE_RESTART:
                for address in before[:JOBS]:  # logins as jobs: their queue is in Redis, up
                    reply = await http.post(
                        "/api/jobs/verify-user",
                        json={"data": {"email": address, "password": checks.PASSWORD}},
                    )
                    assert reply.status_code == 202, reply.text
                    jobs.append(reply.json()["data"]["job_id"])
            address = email()
            later.append(address)
            await asyncio.gather(
                client.register(address),
                client.verify(during[round_ % len(during)], codes[during[round_ % len(during)]]),
                client.login(before[round_ % len(before)]),
                client.get("/health/ready"),
                client.get("/health/schema"),
            )
            round_ += 1
            await asyncio.sleep(0.1)
        stopped = client.reset()
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and "database" in ready.text, ready.text

        # Started again: the same Gatehouse process serves as soon as the database does.
        restarted_at = time.monotonic()
        await asyncio.to_thread(own_postgres.start)
        database_up_in = time.monotonic() - restarted_at
        probe = email()
        later.append(probe)

        async def serving() -> bool:
            return await client.register(probe) == 202

        recovered_at = await checks.wait_until(
            "sign-ups after the restart", serving, restarted_at + RECOVERY_DEADLINE, every=0.1
        )
        recovery = client.reset()

        # Connections cut while idle: a unit of work whose pooled connection is dead replaces
        # it on its first statement, so not one request fails.
        await checks.bounded(20, [(lambda e=e: client.login(e)) for e in before * 2])
        killed_idle = int(await asyncio.to_thread(own_postgres.sql, KILL_BACKENDS))
        await checks.bounded(20, [(lambda e=e: client.login(e)) for e in before * 2])
        after_idle_cut = client.reset()

        # Connections cut again and again under load: 503 or success, never 500.
        cuts: list[int] = []
        stop_cutting = asyncio.Event()

        async def cutter() -> None:
            while not stop_cutting.is_set():
                cuts.append(int(await asyncio.to_thread(own_postgres.sql, KILL_BACKENDS)))
                await asyncio.sleep(0.25)

        unverified = list(during)  # verified one by one while the cuts go on
        verified_under_cuts: set[str] = set()

        async def verify_next() -> None:
            if unverified:
                address = unverified.pop()
                if await client.verify(address, codes[address]) == 201:
                    verified_under_cuts.add(address)

        cutting = asyncio.create_task(cutter())
        cut_started = time.monotonic()
        round_ = 0
        try:
            while time.monotonic() < cut_started + CUTTING_FOR:
                address = email()
                later.append(address)
                await asyncio.gather(
                    client.register(address),
                    verify_next(),
                    client.login(before[round_ % len(before)]),
                    client.get("/health/ready"),
                )
                round_ += 1
        finally:
            stop_cutting.set()
            await cutting
        under_cuts = client.reset()

        # Clients retry what failed: every sign-up goes through and every code verifies.
        retry = await checks.bounded(10, [(lambda e=e: client.register(e)) for e in later])
        assert set(retry) == {202}, client.statuses()

        async def settled() -> bool:
            snap = await checks.snapshot(own_postgres.url)
            if snap.unpublished:
                return False
            return await asyncio.to_thread(
                checks.consumed_to_the_end,
                own_kafka.bootstrap,
                serve.courier_group,
                events.SEND_OTP,
            )

        await checks.wait_until(
            "the outbox and the courier to settle", settled, time.monotonic() + 90
        )
        pending = sorted((set(during) - verified_under_cuts) | set(later))
        codes = await codes_for(mail_sink, set(pending), time.monotonic() + 30)
        verified = dict(
            zip(
                pending,
                await checks.bounded(
                    10, [(lambda e=e: client.verify(e, codes[e])) for e in pending]
                ),
                strict=True,
            )
        )
        outcomes = await job_outcomes(client, jobs, time.monotonic() + 90)
        await checks.wait_until(
            "the outbox and the courier to settle", settled, time.monotonic() + 90
        )
    exit_code = serve.stop()

    snap = await checks.snapshot(own_postgres.url)
    in_topics = checks.topic_ids(own_kafka.bootstrap, [events.SEND_OTP, events.USER_EVENTS])
    mails = checks.mail_ids(mail_sink, {*first, *later})
    stopped_statuses = {r: dict(c.statuses) for r, c in stopped.items()}
    chaos_report(
        f"PostgreSQL stopped {restarted_at - stopped_at:.1f}s: answers {stopped_statuses}; "
        f"up again in {database_up_in:.1f}s, serving {recovered_at - restarted_at:.1f}s after "
        f"the restart (probe answers {dict(recovery['register'].statuses)}), no Gatehouse restart"
    )
    chaos_report(
        f"idle cut of {killed_idle} connections: then {dict(after_idle_cut['login'].statuses)}; "
        f"{len(cuts)} cuts ({sum(cuts)} connections) under load in {CUTTING_FOR:.0f}s: "
        f"{ {r: dict(c.statuses) for r, c in under_cuts.items()} }"
    )
    chaos_report(
        f"users {len(snap.users)}, pending {len(snap.pending)}, outbox rows {len(snap.outbox)} "
        f"(unpublished {snap.unpublished}), in Kafka {sum(in_topics.values())} records "
        f"({sum(n - 1 for n in in_topics.values())} re-published), mails {sum(mails.values())} "
        f"for {len(mails)} message ids, jobs {Counter(o['state'] for o in outcomes)} after "
        f"attempts {sorted(o['attempts_made'] for o in outcomes)}"
    )

    # While stopped: 503 for everything that needs the database, never a 500.
    for route, calls in stopped.items():
        assert set(calls.statuses) == {503}, (route, calls.statuses, calls.samples)
    assert set(stopped) == {"register", "verify", "login", "/health/ready", "/health/schema"}
    # A cut while idle costs no request anything.
    assert killed_idle > 0
    assert after_idle_cut["login"].statuses == {200: 4 * len(before)}, after_idle_cut[
        "login"
    ].samples
    # Under cuts: answers or 503, never a 500; and the cuts did hit.
    assert sum(cuts) > 0
    for route, calls in under_cuts.items():
        assert set(calls.statuses) <= {200, 201, 202, 503}, (route, calls.statuses, calls.samples)
    # Every sign-up ended as a user; a code checked during the outage was not lost. (A 400 is
    # right only for a verification whose 503 came after its commit: the user exists.)
    assert verified_under_cuts, under_cuts["verify"].statuses
    for address, status in verified.items():
        assert status == 201 or (status == 400 and address in snap.users.values()), (
            address,
            status,
        )
    assert sorted(snap.users.values()) == sorted({*first, *later}) and not snap.pending
    assert checks.half_written(snap) == []
    # Every outbox row reached Kafka (at least once: a cut between publishing and marking
    # publishes again; consumers de-duplicate on the id), and each message was mailed once.
    assert snap.unpublished == 0
    assert {r["id"] for r in snap.outbox} <= set(in_topics)
    assert set(mails) == {r["id"] for r in snap.send_otp} and set(mails.values()) == {1}
    # The jobs submitted while the database was down all completed (retried with backoff).
    assert [(o["state"], o["result"]["success"]) for o in outcomes] == [("completed", True)] * JOBS
    assert checks.unfinished_jobs(chaos_redis) == {}
    assert exit_code == 0, serve.logs()[-5000:]
