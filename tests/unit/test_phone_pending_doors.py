"""A pending phone through every door: `PATCH /api/auth/profile` answers 202 (as documented)
and `POST /api/auth/phone/verify` confirms; taken and free numbers, and every kind of wrong
code, answer alike; the `update-user` queue does the same (`phone`, then `phone_otp`) through
the dispatcher, the job door and a worker, keeps no full number at rest, and meets the route's
per-address limit and the flow's per-account ones."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gatehouse.domain import events
from gatehouse.domain.users import mask_phone
from gatehouse.jobs.dispatch import handle_job
from gatehouse.jobs.embedded import MemoryJobs
from gatehouse.jobs.http import route_of_job
from gatehouse.jobs.results import at_rest
from gatehouse.jobs.worker import JobProcessor
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.profile.schemas import (
    PHONE_CODE_SENT,
    PHONE_VERIFIED,
    PhonePendingData,
    UserData,
)
from gatehouse.web.schemas import Envelope, ErrorOut
from tests.fakes import MemoryDatabase

from .api_client import EMAIL, Api
from .helpers import other_code, user_events
from .test_flows_profile_recovery import signed_up
from .test_jobs_worker import finished
from .test_openapi import answered, document
from .test_phone_pending import FREE, NEW, phone_code

DIGITS = "7700900123"  # NEW without its prefix: never in a result at rest
VARYING = {"x-request-id", "date", "content-length"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def account(api: Api, email: str = EMAIL) -> dict[str, str]:
    await api.signed_up(email)
    return bearer((await api.logged_in(email))["token"])


async def patch(api: Api, auth: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return await api.client.patch("/api/auth/profile", json=body, headers=auth)


async def confirm(api: Api, auth: dict[str, str], otp: str) -> httpx.Response:
    return await api.client.post("/api/auth/phone/verify", json={"otp": otp}, headers=auth)


async def profile_phone(api: Api, auth: dict[str, str]) -> str | None:
    phone: str | None = (await api.client.get("/api/auth/profile", headers=auth)).json()["data"][
        "user"
    ]["phone"]
    return phone


async def code_to(api: Api, number: str) -> str:
    """The newest code sent to `number` (a phone command names its recipient masked)."""
    sent = await api.sent_codes(mask_phone(number))
    assert sent, f"no code sent to {mask_phone(number)}"
    return sent[-1]


def alike(response: httpx.Response) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """Status, body without the user's own details, headers but the per-request ones."""
    body = response.json()
    data = body.get("data") or {}
    shape = {k: v for k, v in data.items() if k not in ("user", "phone_pending")}
    headers = sorted((k, v) for k, v in response.headers.items() if k not in VARYING)
    return response.status_code, {**body, "data": shape}, headers


async def test_a_patch_is_202_and_the_phone_changes_only_with_its_code(api: Api) -> None:
    doc = await document(api.client)
    auth = await account(api)
    changed = await patch(api, auth, {"phone": NEW, "name": "Ada L"})
    assert changed.status_code == 202  # before: 200 and the phone changed at once
    pending = answered(doc, changed, Envelope[PhonePendingData])
    assert pending.message == PHONE_CODE_SENT
    data = pending.data
    assert (data.user.name, data.user.phone, data.phone_pending, data.expires_in) == (
        "Ada L",
        None,
        mask_phone(NEW),
        600,
    )
    assert await profile_phone(api, auth) is None
    code = await code_to(api, NEW)
    wrong = await confirm(api, auth, other_code(code))
    assert answered(doc, wrong, ErrorOut).code == "invalid_code" and wrong.status_code == 400
    right = await confirm(api, auth, code)
    done = answered(doc, right, Envelope[UserData])
    assert (done.message, done.data.user.phone) == (PHONE_VERIFIED, NEW)
    assert await profile_phone(api, auth) == NEW
    assert (await patch(api, auth, {"name": "Ada"})).status_code == 200  # no phone: 200


async def test_a_taken_number_and_a_free_one_answer_alike_and_the_taken_one_never_confirms(
    api: Api,
) -> None:
    owner = await account(api, "owner@example.com")
    await patch(api, owner, {"phone": NEW})
    assert (await confirm(api, owner, await code_to(api, NEW))).status_code == 200
    thief = await account(api, "thief@example.com")
    other = await account(api, "other@example.com")
    taken, free = await patch(api, thief, {"phone": NEW}), await patch(api, other, {"phone": FREE})
    assert taken.status_code == 202 and alike(taken) == alike(free)  # before: 409 and 202
    assert len(await api.sent_codes(mask_phone(NEW))) == 1  # the owner's own, nothing since
    refused = await confirm(api, thief, "123456")
    wrong = await confirm(api, other, other_code(await code_to(api, FREE)))
    assert refused.status_code == 400 and alike(refused) == alike(wrong)
    assert await profile_phone(api, thief) is None and await profile_phone(api, owner) == NEW


async def test_no_pending_phone_a_wrong_code_and_an_expired_one_answer_alike(api: Api) -> None:
    auth = await account(api)
    nothing = await confirm(api, auth, "123456")
    await patch(api, auth, {"phone": NEW})
    code = await code_to(api, NEW)
    wrong = await confirm(api, auth, other_code(code))
    api.clock.advance(601)
    expired = await confirm(api, auth, code)
    assert nothing.status_code == 400
    assert alike(nothing) == alike(wrong) == alike(expired)
    assert await profile_phone(api, auth) is None


async def test_update_user_jobs_ask_then_confirm_and_keep_no_number_at_rest(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    token = (await signed_up(ctx, db, phone=None)).token
    asked = await handle_job(ctx, "update-user", "update-user", {"token": token, "phone": NEW})
    assert (asked["success"], asked["message"]) == (True, PHONE_CODE_SENT)
    assert (asked["data"]["phone_pending"], asked["data"]["user"]["phone"]) == (
        mask_phone(NEW),
        None,
    )
    code = phone_code(ctx, db)
    mixed = {"token": token, "phone_otp": code, "name": "Ada L"}
    refused = await handle_job(ctx, "update-user", "update-user", mixed)
    assert (refused["code"], refused["errors"][0]["field"]) == ("invalid_input", "name")
    wrong = {"token": token, "phone_otp": other_code(code)}
    assert (await handle_job(ctx, "update-user", "u", wrong))["code"] == "invalid_code"
    right = {"token": token, "phone_otp": code}
    done = await handle_job(ctx, "update-user", "u", right, "job-1")
    assert (done["success"], done["message"], done["data"]["user"]["phone"]) == (
        True,
        PHONE_VERIFIED,
        NEW,  # in full in the push to the producer's room
    )
    assert DIGITS not in str(at_rest(done)) and DIGITS not in str(at_rest(asked))
    # The worker died before the queue recorded it: the job runs again and passes on its receipt,
    # once; another job with the spent code does not.
    again = await handle_job(ctx, "update-user", "u", right, "job-1")
    assert (again["success"], again["data"]["user"]["phone"]) == (True, NEW)
    assert len(user_events(db, events.PHONE_VERIFIED)) == 1
    other = await handle_job(ctx, "update-user", "u", right, "job-2")
    assert other["code"] == "invalid_code"


async def test_per_account_limits_hold_for_jobs_from_any_producer(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    token = (await signed_up(ctx, db, phone=None)).token
    rules = {"phone_change_account": "1/minute", "phone_verify_account": "2/minute"}
    limited = dataclasses.replace(ctx, limiter=LimitsRateLimiter(rules))
    asks = [
        await handle_job(limited, "update-user", "u", {"token": token, "phone": number})
        for number in (NEW, FREE)
    ]
    assert [a.get("code") for a in asks] == [None, "rate_limited"]
    tries = [
        await handle_job(limited, "update-user", "u", {"token": token, "phone_otp": "000000"})
        for _ in range(3)
    ]
    assert [t["code"] for t in tries] == ["invalid_code", "invalid_code", "rate_limited"]


@pytest.fixture
async def worker(api: Api) -> AsyncIterator[MemoryJobs]:
    """A worker on the api's own in-process queue, as `gatehouse serve` runs one."""
    services = api.services
    assert isinstance(services.jobs, MemoryJobs)
    stop = asyncio.Event()
    process = JobProcessor(services.ctx, services.ctx.notifier)
    task = asyncio.ensure_future(services.job_worker.work(["update-user"], process, stop, 2))
    yield services.jobs
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_the_job_door_and_a_worker_do_what_the_routes_do(
    api: Api, worker: MemoryJobs
) -> None:
    auth = await account(api)
    token = auth["Authorization"].removeprefix("Bearer ")

    async def job(data: dict[str, Any]) -> dict[str, Any]:
        body = {"data": {"token": token, **data}}
        accepted = await api.client.post("/api/jobs/update-user", json=body)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["data"]["job_id"]
        assert (await finished(worker, job_id, "update-user")).state == "completed"
        state = await api.client.get(f"/api/jobs/update-user/{job_id}")
        assert DIGITS not in state.text  # at rest: masked
        result: dict[str, Any] = state.json()["data"]["result"]
        return result

    asked = await job({"phone": NEW})
    assert (asked["message"], asked["data"]["phone_pending"]) == (PHONE_CODE_SENT, mask_phone(NEW))
    assert await profile_phone(api, auth) is None
    done = await job({"phone_otp": await code_to(api, NEW)})
    assert (done["success"], done["data"]["user"]["phone"]) == (True, mask_phone(NEW))
    assert await profile_phone(api, auth) == NEW


async def test_the_route_and_its_jobs_share_the_per_address_limit(api: Api) -> None:
    assert route_of_job("update-user", "update-user", {"phone_otp": "123456"}) == "phone_verify"
    assert route_of_job("update-user", "update-user", {"phone": NEW}) is None
    auth = await account(api)
    token = auth["Authorization"].removeprefix("Bearer ")
    rules = {"phone_verify_ip": "1/minute"}
    api.services.ctx = dataclasses.replace(api.services.ctx, limiter=LimitsRateLimiter(rules))
    assert (await confirm(api, auth, "123456")).status_code == 400
    assert (await confirm(api, auth, "123456")).status_code == 429
    verify_job = {"data": {"token": token, "phone_otp": "123456"}}
    assert (await api.client.post("/api/jobs/update-user", json=verify_job)).status_code == 429
    ask_job = {"data": {"token": token, "phone": NEW}}
    assert (await api.client.post("/api/jobs/update-user", json=ask_job)).status_code == 202
