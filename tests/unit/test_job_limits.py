"""Every door meets the same limits: the job door counts each job on the per-address limit of
the HTTP route it stands for (one counter for both doors), and per-account limits live in the
flows, so a job from any producer meets them and completes refused, not retried."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.dispatch import handle_job
from gatehouse.jobs.http import route_of_job
from gatehouse.security import memory
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration
from gatehouse.storage.migrate import upgrade
from tests.fakes import MemoryDatabase

from .helpers import FakeClock, last_code, offline_settings

PASSWORD = "correct horse battery staple"
RULES = {
    "login_ip": "3/minute",
    "register_ip": "1/minute",
    "forgot_ip": "1/minute",
    "reset_ip": "1/minute",
    "verify_ip": "1/minute",
}


@dataclasses.dataclass
class Doors:
    services: Services
    app: Any

    def client(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 1234))
        return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.fixture
async def doors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Doors]:
    clock = FakeClock()
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=clock.monotonic))
    settings = offline_settings(tmp_path, rate_limits=RULES, answer_floor_ms=0, hash_workers=1)
    services = build(settings, clock=clock)
    await upgrade(services.engine)
    yield Doors(services, create_app(services))
    await services.aclose()


def login(email: str) -> dict[str, str]:
    return {"email": email, "password": "wrong password!"}


async def test_an_address_the_login_route_refuses_is_refused_at_the_job_door(doors: Doors) -> None:
    async with doors.client("203.0.113.7") as http:
        statuses = [
            (await http.post("/api/auth/login", json=login(f"u{i}@example.com"))).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        job = await http.post("/api/jobs/verify-user", json={"data": login("v@example.com")})
        assert job.status_code == 429, job.text
        assert job.json()["code"] == "rate_limited" and int(job.headers["retry-after"]) > 0
        # Queues whose routes have no limit go on: the door keeps each route's own rules.
        other = await http.post("/api/jobs/read-user", json={"data": {"token": "t"}})
        assert other.status_code == 202


async def test_jobs_spend_the_routes_counter_so_the_route_refuses_after_them(
    doors: Doors,
) -> None:
    async with doors.client("198.51.100.9") as http:
        for i in range(3):
            job = await http.post("/api/jobs/verify-user", json={"data": login(f"j{i}@x.org")})
            assert job.status_code == 202, job.text
        assert (await http.post("/api/auth/login", json=login("k@x.org"))).status_code == 429


@pytest.mark.parametrize(
    ("queue", "name", "data", "route", "body"),
    [
        (
            "verification",
            None,
            {"channel": "email", "to": "a@x.org", "purpose": "register"},
            "/api/auth/register",
            {"name": "A", "email": "b@x.org", "password": PASSWORD},
        ),
        (
            "verification",
            None,
            {"channel": "email", "to": "a@x.org", "purpose": "recovery"},
            "/api/auth/password/forgot",
            {"email": "b@x.org"},
        ),
        (
            "password-recovery",
            "request",
            {"email": "a@x.org"},
            "/api/auth/password/forgot",
            {"email": "b@x.org"},
        ),
        (
            "password-recovery",
            "reset",
            {"email": "a@x.org", "otp": "123456", "new_password": PASSWORD},
            "/api/auth/password/reset",
            {"email": "b@x.org", "otp": "123456", "new_password": PASSWORD},
        ),
        (
            "create-user",
            None,
            {"email": "a@x.org", "otp": "123456", "password": PASSWORD, "name": "A"},
            "/api/auth/verify-otp",
            {"email": "b@x.org", "otp": "123456"},
        ),
    ],
)
async def test_each_job_meets_its_routes_address_limit(
    doors: Doors,
    queue: str,
    name: str | None,
    data: dict[str, Any],
    route: str,
    body: dict[str, Any],
) -> None:
    async with doors.client("192.0.2.44") as http:
        first = await http.post(f"/api/jobs/{queue}", json={"name": name or queue, "data": data})
        assert first.status_code == 202, first.text
        assert (await http.post(route, json=body)).status_code == 429  # one a minute, spent
        again = await http.post(f"/api/jobs/{queue}", json={"name": name or queue, "data": data})
        assert again.status_code == 429


def test_every_queue_is_mapped_to_its_route_or_to_none() -> None:
    assert route_of_job("verify-user", "anything", {}) == "login"
    assert route_of_job("create-user", "create-user", {}) == "verify"
    assert route_of_job("verification", "v", {"purpose": "register"}) == "register"
    assert route_of_job("verification", "v", {"purpose": "recovery"}) == "forgot"
    assert route_of_job("password-recovery", "request", {}) == "forgot"
    assert route_of_job("password-recovery", "reset", {}) == "reset"
    for queue in ("read-user", "update-user", "delete-user"):  # their routes have no limits
        assert route_of_job(queue, queue, {}) is None


# --- per account, in the flows: any producer -------------------------------------------------


@pytest.fixture
def limited(ctx: FlowContext) -> FlowContext:
    rules = {"login_account": "2/minute", "verify_account": "2/minute", "reset_account": "2/minute"}
    return dataclasses.replace(ctx, limiter=LimitsRateLimiter(rules))


async def test_sign_ins_as_jobs_meet_the_per_account_limit_and_are_refused_not_retried(
    ctx: FlowContext, limited: FlowContext, db: MemoryDatabase
) -> None:
    await registration.register(ctx, name="A", email="ada@example.com", password=PASSWORD)
    await registration.verify(
        ctx, email="ada@example.com", otp=last_code(db, ctx.keyring, "ada@example.com")
    )
    data = {"email": "ada@example.com", "password": PASSWORD}
    results = [await handle_job(limited, "verify-user", "verify-user", data) for _ in range(3)]
    assert [r["success"] for r in results] == [True, True, False]
    assert results[2]["code"] == "rate_limited"  # a refusal: the job completes, no retry
    other = await handle_job(limited, "verify-user", "v", {**data, "email": "bob@example.com"})
    assert other["code"] == "invalid_credentials"  # another account has its own budget


@pytest.mark.parametrize(
    ("queue", "name", "data"),
    [
        (
            "create-user",
            "create-user",
            {"email": "Ada@Example.com", "otp": "000000", "password": PASSWORD, "name": "A"},
        ),
        (
            "password-recovery",
            "reset",
            {"email": "ada@example.com", "otp": "000000", "new_password": PASSWORD},
        ),
        (
            "password-recovery",
            "reset",
            {"phone": "+1 415 555 0123", "otp": "000000", "new_password": PASSWORD},
        ),
    ],
)
async def test_code_jobs_meet_the_per_account_limit_known_account_or_not(
    limited: FlowContext, queue: str, name: str, data: dict[str, Any]
) -> None:
    codes = [(await handle_job(limited, queue, name, data))["code"] for _ in range(3)]
    assert codes == ["invalid_code", "invalid_code", "rate_limited"]
