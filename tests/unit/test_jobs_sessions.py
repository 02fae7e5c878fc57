"""The `sessions` queue (`list`, `revoke`) and recent authentication through the queues."""

from __future__ import annotations

from gatehouse.jobs.dispatch import QUEUES, handle_job
from gatehouse.selfservice.context import FlowContext
from tests.fakes import MemoryDatabase

from .helpers import FakeClock
from .test_jobs_dispatch import PASSWORD, seed_flow


async def test_sessions_are_listed_and_ended_through_the_queue(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    assert "sessions" in QUEUES
    first = (await seed_flow(ctx, db))["data"]
    clock.advance(1)  # newest first: the second session is listed first
    second = await handle_job(
        ctx, "verify-user", "verify-user", {"email": "ada@example.com", "password": PASSWORD}
    )
    token, other = first["token"], second["data"]["token"]  # type: ignore[index]
    user_id = first["user"]["id"]  # type: ignore[index]
    listed = await handle_job(ctx, "sessions", "list", {"token": token})
    assert (listed["success"], listed["user_id"]) == (True, user_id)
    sessions = listed["data"]["sessions"]
    assert [s["current"] for s in sessions] == [False, True]
    other_sid = ctx.tokens.verify(other, clock.now).sid
    assert sessions[0]["id"] == other_sid

    ended = await handle_job(ctx, "sessions", "revoke", {"token": token, "session_id": other_sid})
    assert (ended["success"], ended["user_id"]) == (True, user_id)
    refused = await handle_job(ctx, "read-user", "read-user", {"token": other})
    assert (refused["success"], refused["code"]) == (False, "invalid_token")
    again = await handle_job(ctx, "sessions", "revoke", {"token": token, "session_id": other_sid})
    assert (again["success"], again["code"]) == (False, "not_found")


async def test_the_job_name_picks_the_step(ctx: FlowContext, db: MemoryDatabase) -> None:
    token = (await seed_flow(ctx, db))["data"]["token"]  # type: ignore[index]
    unknown = await handle_job(ctx, "sessions", "sessions", {"token": token})
    assert (unknown["success"], unknown["code"]) == (False, "invalid_input")
    assert "list or revoke" in unknown["message"]
    missing = await handle_job(ctx, "sessions", "revoke", {"token": token})
    assert [e["field"] for e in missing["errors"]] == ["session_id"]


async def test_a_stale_session_changes_no_phone_through_the_queue(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    token = (await seed_flow(ctx, db))["data"]["token"]  # type: ignore[index]
    clock.advance(ctx.policy.step_up.total_seconds() + 1)
    phone = {"token": token, "phone": "+14155550123"}
    refused = await handle_job(ctx, "update-user", "update-user", phone)
    assert (refused["success"], refused["code"]) == (False, "reauth_required")
    proved = await handle_job(
        ctx, "update-user", "update-user", {**phone, "current_password": PASSWORD}
    )
    assert proved["success"] is True
