"""The HTTP door to the queues on the real Redis: `POST /api/jobs/{queue}` (202, idempotent with
a key) and `GET /api/jobs/{queue}/{job_id}`, with a worker running in the same event loop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.worker import worker_role
from gatehouse.selfservice.context import FlowContext
from gatehouse.storage.migrate import upgrade
from tests.conftest import free_port, unique
from tests.e2e.stack import own_redis_db
from tests.unit.helpers import offline_settings

USER = {"id": "u-1", "email": "ada@example.com"}


def settings_for(tmp: Path, redis_url: str) -> Settings:
    return offline_settings(
        tmp, redis_url=redis_url, job_submit_timeout_seconds=0.5, hash_workers=1
    )


@dataclass
class Door:
    http: httpx.AsyncClient
    services: Services
    calls: list[tuple[str, str, Any]]

    async def finished(self, queue: str, job_id: str) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                reply = await self.http.get(f"/api/jobs/{queue}/{job_id}")
                assert reply.status_code == 200, reply.text
                data: dict[str, Any] = reply.json()["data"]
                if data["state"] in ("completed", "failed"):
                    return data
                await asyncio.sleep(0.02)


@pytest.fixture
async def door(tmp_path: Path, redis_url: str) -> AsyncIterator[Door]:
    calls: list[tuple[str, str, Any]] = []

    async def handler(
        _ctx: FlowContext, queue: str, name: str, data: Any, _job_id: str
    ) -> dict[str, Any]:
        calls.append((queue, name, data))
        return {"success": True, "message": "Profile", "data": {"user": USER}}

    with own_redis_db(redis_url) as own_redis:
        services = build(settings_for(tmp_path, own_redis))
        await upgrade(services.engine)
        stop = asyncio.Event()
        worker = asyncio.ensure_future(worker_role(["read-user"], handler)(services)(stop))
        try:
            transport = httpx.ASGITransport(app=create_app(services))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                yield Door(http, services, calls)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
            await services.aclose()


async def test_a_job_is_accepted_with_a_random_id_and_its_result_read_back(door: Door) -> None:
    reply = await door.http.post(
        "/api/jobs/read-user", json={"data": {"token": "t0k3n", "notify": "some-sid"}}
    )
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert body["status"] == "success" and body["message"] == "Job accepted"
    job_id = body["data"]["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id) and body["data"]["queue"] == "read-user"
    assert reply.headers["location"] == f"/api/jobs/read-user/{job_id}"

    state = await door.finished("read-user", job_id)
    assert state["state"] == "completed" and state["attempts_made"] == 1
    assert state["name"] == "read-user"  # the queue's name when none is given
    assert state["result"] == {"success": True, "message": "Profile", "data": {"user": USER}}
    assert state["failed_reason"] is None
    assert door.calls == [("read-user", "read-user", {"token": "t0k3n", "notify": "some-sid"})]


async def test_an_idempotency_key_makes_a_resubmission_a_no_op(door: Door) -> None:
    key = unique("client-key-0001")
    headers = {"Idempotency-Key": key}
    first = await door.http.post("/api/jobs/read-user", json={"data": {}}, headers=headers)
    assert first.status_code == 202 and first.json()["data"]["job_id"] == key
    await door.finished("read-user", key)
    again = await door.http.post(
        "/api/jobs/read-user", json={"name": "other", "data": {"x": 1}}, headers=headers
    )
    body_key = await door.http.post("/api/jobs/read-user", json={"data": {}, "job_id": key})
    assert again.status_code == body_key.status_code == 202
    assert again.json()["data"]["job_id"] == body_key.json()["data"]["job_id"] == key
    # A later job: once it has run, a duplicate queued before it (FIFO) would have run too.
    marker = await door.http.post("/api/jobs/read-user", json={"data": {"marker": True}})
    await door.finished("read-user", marker.json()["data"]["job_id"])
    assert [data for _q, _n, data in door.calls] == [{}, {"marker": True}]


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"data": {}, "extra": 1}, {}, "extra"),
        ({"data": ["not", "an", "object"]}, {}, "data"),
        ({"data": "text"}, {}, "data"),
        ({}, {}, "data"),
        ({"data": {}, "name": ""}, {}, "name"),
        ({"data": {}, "job_id": "short"}, {}, "job_id"),
        ({"data": {}, "job_id": "has:colon-0123456789"}, {}, "job_id"),
        ({"data": {}}, {"Idempotency-Key": "short"}, "Idempotency-Key"),
        (
            {"data": {}, "job_id": "a-key-of-sixteen-chars"},
            {"Idempotency-Key": "another-key-of-sixteen"},
            "job_id",
        ),
    ],
)
async def test_malformed_submissions_are_refused(
    door: Door, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    reply = await door.http.post("/api/jobs/read-user", json=body, headers=headers)
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["status"] == "error" and problem["code"] == "invalid_input"
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert door.calls == []


async def test_unknown_queues_and_jobs_are_404(door: Door) -> None:
    for reply in (
        await door.http.post("/api/jobs/launch-missiles", json={"data": {}}),
        await door.http.get("/api/jobs/launch-missiles/whatever-id-0000"),
        await door.http.get("/api/jobs/read-user/no-such-job-00000000"),
    ):
        assert reply.status_code == 404, reply.text
        assert reply.json()["status"] == "error" and reply.json()["code"] == "not_found"


async def test_a_guessable_job_id_shows_the_outcome_but_not_the_data(door: Door) -> None:
    # What a producer gets without choosing an id: BullMQ counts 1, 2, 3...
    job_id = await door.services.jobs.submit("read-user", "read-user", {"token": "t"})
    assert job_id.isdigit()
    state = await door.finished("read-user", job_id)
    assert state["result"] == {"success": True, "message": "Profile"}


async def test_redis_down_is_503(tmp_path: Path) -> None:
    services = build(settings_for(tmp_path, f"redis://127.0.0.1:{free_port()}/0"))
    await upgrade(services.engine)
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            posted = await http.post("/api/jobs/read-user", json={"data": {}})
            read = await http.get("/api/jobs/read-user/any-job-id-00000000")
    finally:
        await services.aclose()
    for reply in (posted, read):
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == "unavailable" and reply.headers["retry-after"]
