"""The queue dispatcher: every queue's job data to its flow, refusals as `success: false`,
infrastructure failures raised for retry, and the rule for notification rooms."""

from __future__ import annotations

import dataclasses

import pytest

from gatehouse.errors import Unavailable
from gatehouse.jobs.dispatch import QUEUES, handle_job, notification_room
from gatehouse.selfservice.context import FlowContext
from tests.fakes import MemoryDatabase

from .helpers import FaultyUow, code_in, deliveries, last_code

PASSWORD = "correct horse battery staple"


async def seed_flow(ctx: FlowContext, db: MemoryDatabase) -> dict[str, object]:
    sent = await handle_job(
        ctx,
        "verification",
        "verification",
        {"channel": "email", "to": "ada@example.com", "purpose": "register"},
    )
    assert sent["success"] is True
    created = await handle_job(
        ctx,
        "create-user",
        "create-user",
        {
            "email": "ada@example.com",
            "otp": last_code(db, ctx.keyring, "ada@example.com"),
            "password": PASSWORD,
            "name": "Ada",
            "role": "admin",
            "is_admin": True,
        },
    )
    assert created["success"] is True, created
    login = await handle_job(
        ctx, "verify-user", "login", {"email": "ada@example.com", "password": PASSWORD}
    )
    assert login["success"] is True
    return login


async def test_every_queue_round_trip(ctx: FlowContext, db: MemoryDatabase) -> None:
    login = await seed_flow(ctx, db)
    data = login["data"]
    assert isinstance(data, dict)
    token, user_id = data["token"], data["user"]["id"]
    assert login["user_id"] == user_id
    assert "role" not in str(db.tables.users[user_id])  # extra job fields never reach a flow

    read = await handle_job(ctx, "read-user", "read", {"token": token})
    assert read["data"]["user"]["email"] == "ada@example.com"
    updated = await handle_job(ctx, "update-user", "update", {"token": token, "name": "Ada L"})
    assert updated["data"]["user"]["name"] == "Ada L"

    request = await handle_job(
        ctx, "password-recovery", "request", {"email": "ada@example.com", "channel": "email"}
    )
    assert request["success"] is True
    code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    reset = await handle_job(
        ctx,
        "password-recovery",
        "reset",
        {"email": "ada@example.com", "otp": code, "new_password": "another fine password"},
    )
    assert reset == {
        "success": True,
        "message": "Password reset; please log in again",
        "data": {},
        "user_id": user_id,
    }
    again = await handle_job(
        ctx,
        "verify-user",
        "login",
        {"email": "ada@example.com", "password": "another fine password"},
    )
    deleted = await handle_job(
        ctx,
        "delete-user",
        "delete",
        {"token": again["data"]["token"], "password": "another fine password"},
    )
    assert deleted["success"] is True
    assert db.tables.users == {}
    assert set(QUEUES) == {
        "verification",
        "create-user",
        "verify-user",
        "read-user",
        "update-user",
        "delete-user",
        "password-recovery",
        "sessions",
        "mfa",  # tests/unit/test_mfa.py runs it
    }


@pytest.mark.parametrize(
    ("queue", "name", "data", "code"),
    [
        ("read-user", "read", {}, "invalid_input"),
        ("read-user", "read", {"token": 42}, "invalid_input"),
        ("read-user", "read", {"token": "forged.token.value"}, "invalid_token"),
        ("read-user", "read", ["not", "an", "object"], "invalid_input"),
        ("password-recovery", "explode", {"email": "a@example.com"}, "invalid_input"),
        ("no-such-queue", "x", {}, "invalid_input"),
        (
            "create-user",
            "c",
            {"email": "a@example.com", "otp": "123456", "password": PASSWORD, "name": "A"},
            "invalid_code",
        ),
        (
            "verify-user",
            "v",
            {"email": "nobody@example.com", "password": PASSWORD},
            "invalid_credentials",
        ),
        (
            "verification",
            "v",
            {"channel": "sms", "to": "+14155550123", "purpose": "register"},
            "invalid_input",
        ),
    ],
)
async def test_bad_jobs_complete_with_a_clear_refusal(
    ctx: FlowContext, queue: str, name: str, data: object, code: str
) -> None:
    result = await handle_job(ctx, queue, name, data)
    assert result["success"] is False
    assert result["code"] == code
    assert result["message"]


async def test_expired_token_is_refused(ctx: FlowContext, db: MemoryDatabase, clock) -> None:  # type: ignore[no-untyped-def]
    login = await seed_flow(ctx, db)
    clock.advance(16 * 60)
    result = await handle_job(ctx, "read-user", "read", {"token": login["data"]["token"]})
    assert (result["success"], result["code"]) == (False, "invalid_token")


async def test_infrastructure_failure_raises_for_retry(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    down = dataclasses.replace(ctx, uow=FaultyUow(db.uow, fail_at="enter", times=10))
    with pytest.raises(Unavailable):
        await handle_job(
            down, "verify-user", "login", {"email": "ada@example.com", "password": PASSWORD}
        )


def test_notification_rooms() -> None:
    mine = {"success": True, "user_id": "u-1"}
    assert notification_room({"notify": "user:u-1"}, mine) == "user:u-1"
    assert notification_room({"notify": "user:u-2"}, mine) is None  # someone else's room
    assert notification_room({"notify": "user:u-1"}, {"success": False}) is None
    assert notification_room({"notify": "Xa9sid"}, {"success": False}) == "Xa9sid"
    assert notification_room({}, mine) is None
    assert notification_room({"notify": 5}, mine) is None
    assert notification_room("garbage", mine) is None
