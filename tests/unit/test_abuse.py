"""Abuse protection: growing waits after failed logins, OTP send limits per recipient and per
country, HTTP limits per client address and account with Retry-After, trusted proxies."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from gatehouse.bootstrap import build
from gatehouse.config import Settings
from gatehouse.domain.throttle import country_prefix, login_wait
from gatehouse.entrypoints.app import create_app
from gatehouse.errors import InvalidCredentials, RateLimited
from gatehouse.security import memory
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.registration import flow as registration
from gatehouse.storage.migrate import upgrade
from tests.fakes import MemoryDatabase

from .helpers import FakeClock, last_code

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0), (4, 0), (5, 60), (6, 120), (8, 480), (9, 900), (20, 900), (29, 900), (30, 43200)],
)
def test_login_waits_grow_from_one_to_fifteen_minutes_then_lock(failures: int, wait: int) -> None:
    assert login_wait(failures, last_failure=1000.0, now=1000.0) == wait
    assert login_wait(failures, last_failure=1000.0, now=1000.0 + wait) == 0


@pytest.mark.parametrize(
    ("phone", "prefix"),
    [
        ("+14155550123", "+1"),
        ("+447911123456", "+44"),
        ("+2348031234567", "+234"),
        ("+79161234567", "+7"),
        ("+3531234567", "+353"),
        ("+33612345678", "+33"),
    ],
)
def test_country_prefix(phone: str, prefix: str) -> None:
    assert country_prefix(phone) == prefix


async def make_user(
    ctx: FlowContext,
    db: MemoryDatabase,
    email: str,
    phone: str | None = None,
) -> None:
    await registration.register(ctx, name="A", email=email, password=PASSWORD, phone=phone)
    await registration.verify(ctx, email=email, otp=last_code(db, ctx.keyring, email))


async def test_failed_logins_make_the_account_wait_even_for_the_right_password(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    await make_user(ctx, db, "ada@example.com")
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email="ada@example.com", password="wrong password!")
    with pytest.raises(RateLimited) as limited:
        await login_flow.login(ctx, email="ada@example.com", password=PASSWORD)
    assert limited.value.retry_after == 60
    clock.advance(61)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD)
    for _ in range(5):  # a success cleared the count: five fresh tries again
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email="ada@example.com", password="wrong password!")


async def test_unknown_emails_are_throttled_alike(ctx: FlowContext, clock: FakeClock) -> None:
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email="ghost@example.com", password="wrong password!")
    with pytest.raises(RateLimited) as limited:
        await login_flow.login(ctx, email="ghost@example.com", password="wrong password!")
    assert limited.value.retry_after == 60


async def test_a_password_reset_clears_failed_logins(ctx: FlowContext, db: MemoryDatabase) -> None:
    await make_user(ctx, db, "ada@example.com")
    for _ in range(6):
        with pytest.raises((InvalidCredentials, RateLimited)):
            await login_flow.login(ctx, email="ada@example.com", password="wrong password!")
    await recovery.request(ctx, email="ada@example.com")
    from .helpers import code_in, deliveries

    code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    await recovery.reset(ctx, email="ada@example.com", otp=code, new_password="new fine password")
    await login_flow.login(ctx, email="ada@example.com", password="new fine password")


@pytest.fixture
def limited_ctx(ctx: FlowContext) -> FlowContext:
    rules = {"otp_recipient": "1/minute", "otp_country": "2/hour"}
    return dataclasses.replace(ctx, limiter=LimitsRateLimiter(rules))


async def test_one_code_a_minute_per_recipient_known_or_not(
    limited_ctx: FlowContext, db: MemoryDatabase
) -> None:
    ctx = limited_ctx
    await registration.register(ctx, name="A", email="new@example.com", password=PASSWORD)
    with pytest.raises(RateLimited):
        await registration.resend(ctx, email="new@example.com")
    await recovery.request(ctx, email="nobody@example.com")
    with pytest.raises(RateLimited):  # same answer as for an address that has an account
        await recovery.request(ctx, email="nobody@example.com")
    with pytest.raises(RateLimited):
        await registration.register(ctx, name="A", email="NEW@example.com", password=PASSWORD)


async def test_sms_sends_are_limited_per_country(
    ctx: FlowContext, limited_ctx: FlowContext, db: MemoryDatabase
) -> None:
    for i in range(3):
        await make_user(ctx, db, f"u{i}@example.com", phone=f"+4479111234{i:02d}")
    await make_user(ctx, db, "us@example.com", phone="+14155550123")
    await recovery.request(limited_ctx, phone="+447911123400", channel="sms")
    await recovery.request(limited_ctx, phone="+447911123401", channel="sms")
    with pytest.raises(RateLimited):
        await recovery.request(limited_ctx, phone="+447911123402", channel="sms")
    await recovery.request(limited_ctx, phone="+14155550123", channel="sms")


@pytest.fixture
async def http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
        secrets_file=tmp_path / "s.json",
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        hash_workers=2,
        rate_limits={"login_ip": "4/minute", "login_account": "2/minute"},
        trusted_proxies=["10.0.0.0/8"],
    )
    clock = FakeClock()
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=clock.monotonic))
    services = build(settings, clock=clock)
    await upgrade(services.engine)
    transport = httpx.ASGITransport(app=create_app(services), client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
    await services.aclose()


async def test_http_limits_answer_429_with_retry_after(http: httpx.AsyncClient) -> None:
    def login(email: str) -> dict[str, str]:
        return {"email": email, "password": "wrong password!"}

    statuses = [
        (await http.post("/api/auth/login", json=login("a@example.com"))).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]  # the account allows two a minute
    other = await http.post("/api/auth/login", json=login("b@example.com"))
    assert other.status_code == 401  # fourth from this address: still inside login_ip
    limited = await http.post("/api/auth/login", json=login("c@example.com"))
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 60
    assert limited.json()["code"] == "rate_limited"


async def test_forwarded_for_counts_only_from_trusted_proxies(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
        secrets_file=tmp_path / "s.json",
        rate_limits={"forgot_ip": "1/minute", "otp_recipient": ""},
        trusted_proxies=["10.0.0.0/8"],
    )
    services = build(settings)
    await upgrade(services.engine)
    app = create_app(services)
    body = {"email": "x@example.com"}

    async def forgot(peer: str, forwarded: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            reply = await c.post(
                "/api/auth/password/forgot", json=body, headers={"X-Forwarded-For": forwarded}
            )
            return reply.status_code

    # An untrusted peer cannot pick a fresh bucket by claiming other addresses.
    assert [await forgot("198.51.100.1", f"192.0.2.{i}") for i in range(2)] == [202, 429]
    # Behind a trusted proxy each forwarded client has its own bucket...
    assert await forgot("10.1.2.3", "192.0.2.50") == 202
    assert await forgot("10.1.2.3", "192.0.2.51") == 202
    # ...and a client cannot escape it by prepending a forged hop.
    assert await forgot("10.1.2.3", "1.1.1.1, 192.0.2.50") == 429
    await services.aclose()


async def test_no_enumeration_answers_wait_for_the_floor(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    import time
    from datetime import timedelta

    floored = dataclasses.replace(
        ctx, policy=dataclasses.replace(ctx.policy, answer_floor=timedelta(milliseconds=120))
    )
    await make_user(ctx, db, "ada@example.com")
    for call in (
        lambda: registration.register(
            floored, name="A", email="ada@example.com", password=PASSWORD
        ),
        lambda: registration.register(
            floored, name="B", email="new@example.com", password=PASSWORD
        ),
        lambda: recovery.request(floored, email="ada@example.com"),
        lambda: recovery.request(floored, email="nobody@example.com"),
        lambda: registration.resend(floored, email="nobody@example.com"),
    ):
        start = time.monotonic()
        await call()
        assert time.monotonic() - start >= 0.12
