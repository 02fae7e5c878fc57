"""The admin door to the failed jobs (`/api/admin/jobs/...`) on the in-process queue: off (404)
without a key, 401 with a wrong one, the failed set without its data, re-drive one or all; the
key's minimum length; `gatehouse jobs` without Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.entrypoints.app import create_app
from gatehouse.ports import JobRun
from gatehouse.storage.migrate import upgrade

from .helpers import offline_settings

KEY = "k" * 40
SECRET = "hunter2 hunter2 hunter2"


def settings_for(tmp: Path, admin_token: str) -> Settings:
    return offline_settings(
        tmp,
        job_attempts=1,
        admin_token=admin_token,
        hash_workers=1,
    )


@dataclass
class Admin:
    http: httpx.AsyncClient
    services: Services
    broken: list[bool]

    def get(self, path: str, key: str | None = KEY) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.http.get(path, headers=headers)

    def post(self, path: str, key: str | None = KEY) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.http.post(path, headers=headers)


async def serve(tmp: Path, admin_token: str) -> AsyncIterator[Admin]:
    services = build(settings_for(tmp, admin_token))
    broken = [True]
    runs: list[Any] = []

    async def process(run: JobRun) -> dict[str, Any]:
        runs.append(run.data)
        if broken[0]:
            raise ConnectionError("database away")
        return {"success": True, "message": "ok", "data": {}}

    stop = asyncio.Event()
    worker = asyncio.ensure_future(services.job_worker.work(["read-user"], process, stop, 2))
    try:
        await upgrade(services.engine)
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield Admin(http, services, broken)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
        await services.aclose()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async for made in serve(tmp_path, KEY):
        yield made


@pytest.fixture
async def disabled(tmp_path: Path) -> AsyncIterator[Admin]:
    async for made in serve(tmp_path, ""):
        yield made


async def failed_job(admin: Admin, job_id: str) -> None:
    await admin.services.jobs.submit("read-user", "read-user", {"token": SECRET}, job_id)
    async with asyncio.timeout(10):
        while (state := await admin.services.jobs.get("read-user", job_id)) is None or (
            state.state != "failed"
        ):
            await asyncio.sleep(0.001)


async def test_without_a_key_configured_the_admin_api_does_not_exist(disabled: Admin) -> None:
    for reply in (
        await disabled.get("/api/admin/jobs/read-user/failed"),
        await disabled.get("/api/admin/jobs/read-user/failed", key=None),
        await disabled.post("/api/admin/jobs/read-user/retry-all", key=""),
        await disabled.http.get("/api/admin/no-such-thing"),
    ):
        assert reply.status_code == 404, reply.text
        assert reply.json() == (await disabled.http.get("/api/nowhere")).json()


async def test_a_missing_or_wrong_key_is_refused(admin: Admin) -> None:
    for key in (None, "", KEY[:-1], KEY + "k", "K" * 40):
        reply = await admin.get("/api/admin/jobs/read-user/failed", key=key)
        assert reply.status_code == 401, (key, reply.text)
        assert reply.json()["code"] == "invalid_token"
    basic = await admin.http.get(
        "/api/admin/jobs/read-user/failed", headers={"Authorization": f"Basic {KEY}"}
    )
    assert basic.status_code == 401


async def test_the_failed_set_is_listed_without_data_and_re_driven(admin: Admin) -> None:
    await failed_job(admin, "job-one-0123456789")
    await failed_job(admin, "job-two-0123456789")
    reply = await admin.get("/api/admin/jobs/read-user/failed")
    assert reply.status_code == 200, reply.text
    listed = reply.json()["data"]
    assert SECRET not in reply.text and "data" not in listed["jobs"][0]
    assert [j["job_id"] for j in listed["jobs"]] == ["job-two-0123456789", "job-one-0123456789"]
    first = listed["jobs"][1]
    assert first["queue"] == "read-user" and first["name"] == "read-user"
    assert first["attempts_made"] == 1 and first["failed_reason"] == "database away"
    assert first["failed_at"]
    limited = await admin.get("/api/admin/jobs/read-user/failed?limit=1")
    assert len(limited.json()["data"]["jobs"]) == 1
    assert (await admin.get("/api/admin/jobs/read-user/failed?limit=0")).status_code == 422
    assert (await admin.get("/api/admin/jobs/launch-missiles/failed")).status_code == 404

    admin.broken[0] = False
    one = await admin.post("/api/admin/jobs/read-user/job-one-0123456789/retry")
    assert one.status_code == 200, one.text
    assert one.json()["data"] == {"queue": "read-user", "job_ids": ["job-one-0123456789"]}
    async with asyncio.timeout(10):
        while (state := await admin.services.jobs.get("read-user", "job-one-0123456789")) and (
            state.state != "completed"
        ):
            await asyncio.sleep(0.001)
    again = await admin.post("/api/admin/jobs/read-user/job-one-0123456789/retry")
    assert again.status_code == 409 and "completed" in again.json()["message"]
    unknown = await admin.post("/api/admin/jobs/read-user/no-such-job-at-all/retry")
    assert unknown.status_code == 404

    every = await admin.post("/api/admin/jobs/read-user/retry-all")
    assert every.status_code == 200, every.text
    assert every.json()["data"]["job_ids"] == ["job-two-0123456789"]
    async with asyncio.timeout(10):
        while (await admin.get("/api/admin/jobs/read-user/failed")).json()["data"]["jobs"]:
            await asyncio.sleep(0.001)


def test_a_short_admin_key_is_refused_without_being_quoted(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="at least 32 characters") as refused:
        settings_for(tmp_path, "s3cr3t-but-too-short")
    assert "s3cr3t" not in str(refused.value)
    assert "s3cr3t" not in repr(settings_for(tmp_path, "s3cr3t" * 6))


def test_gatehouse_jobs_needs_redis_and_ids_or_all(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gatehouse.entrypoints.cli import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("GATEHOUSE_REDIS_URL", raising=False)
    runner = CliRunner()
    embedded = runner.invoke(app, ["jobs", "failed"])
    assert embedded.exit_code == 2 and "GATEHOUSE_REDIS_URL" in embedded.output
    assert runner.invoke(app, ["jobs", "retry"]).exit_code == 2  # neither ids nor --all
    assert runner.invoke(app, ["jobs", "retry", "x", "--all"]).exit_code == 2
    unknown = runner.invoke(app, ["jobs", "failed", "--queue", "launch-missiles"])
    assert unknown.exit_code == 2 and "launch-missiles" in unknown.output
