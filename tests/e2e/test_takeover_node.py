"""Issue 12's attacks through the queues by a Node producer (npm bullmq straight into Redis, no
HTTP route in the way), on a running `gatehouse serve` with its default limits: password guesses
over `verify-user`, sign-up codes over `verification`, the recovery phone moved with a stolen
access token over `update-user`. Before: 600 guesses a minute, a code per job, the phone set at
once. Now the flows' own limits hold for every producer and a new phone is only pending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MailSink, unique
from tests.e2e.stack import mailed_code, run_node, serving

pytestmark = pytest.mark.e2e
PASSWORD = "Owner-Secret-Passw0rd-4417"


@pytest.fixture
async def served(
    postgres_database: str,
    own_redis: str,
    kafka_bootstrap: str,
    mail_sink: MailSink,
    tmp_path: Path,
) -> AsyncIterator[dict[str, str]]:
    """`gatehouse serve` on the real services with the shipped rate limits."""
    with serving(
        tmp_path,
        postgres_database,
        own_redis,
        kafka_bootstrap,
        mail_sink.url,
        "node-attack-courier",
    ) as (base, _log):
        yield {"base": base, "redis": own_redis}


async def test_a_node_producer_meets_every_limit_and_cannot_move_the_phone(
    served: dict[str, str], mail_sink: MailSink, tmp_path: Path
) -> None:
    email = f"{unique('victim')}@example.com"
    target = f"{unique('target')}@example.com"
    async with httpx.AsyncClient(base_url=served["base"], timeout=30) as client:
        body = {"name": "Ada", "email": email, "password": PASSWORD, "phone": "+14155550123"}
        assert (await client.post("/api/auth/register", json=body)).status_code == 202
        code = await mailed_code(mail_sink, email, 1)
        made = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert made.status_code == 201, made.text
        login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        stolen = login.json()["data"]["token"]
    env = {
        "GATEHOUSE_URL": served["base"],
        "REDIS_URL": served["redis"],
        "EMAIL": email,
        "STOLEN_TOKEN": stolen,
        "THIEF_PHONE": "+447700900123",
        "SIGNUP_TARGET": target,
    }
    lines = await run_node("attack_doors.mjs", env, mail_sink, tmp_path)
    steps: dict[str, dict[str, Any]] = {
        line["step"]: line["notification"] for line in lines if "queue" in line
    }
    guesses = [steps[f"guess-{i}"] for i in range(12)]
    judged = [g for g in guesses if g.get("code") == "invalid_credentials"]
    throttled = [g for g in guesses if g.get("code") == "rate_limited"]
    # The account's failure throttle (from the 5th failure) stops the guessing, whatever door.
    assert len(judged) == 5 and len(throttled) == 7, [g.get("code") for g in guesses]
    assert all(not g["success"] for g in guesses)
    # Sign-up codes: one a minute per address, for every producer.
    await mail_sink.wait_for(target, 1)
    sent = [steps[f"signup-code-{i}"] for i in range(4)]
    assert sent[0]["success"] is True
    assert len(mail_sink.to(target)) == 1
    # The stolen token asks for a new phone: pending, masked, the account's phone unchanged.
    moved = steps["move-phone"]
    assert moved["success"] is True, moved
    assert (
        moved["data"]["phone_pending"].startswith("+4477")
        and "\u2022" in moved["data"]["phone_pending"]
    )
    assert steps["read-profile"]["data"]["user"]["phone"] == "+14155550123"
    for line in lines:
        if "queue" in line:
            assert line["returnvalue_secrets"] == [], line  # nothing usable at rest
