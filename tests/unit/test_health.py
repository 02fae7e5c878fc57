"""Readiness reports each dependency on its own, in bounded time (a hung one is named, the others
still answer); the schema check on the embedded SQLite database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.entrypoints.app import create_app
from gatehouse.observability import health
from gatehouse.storage.migrate import code_heads, upgrade

from .helpers import offline_settings


@dataclass
class Probe:
    client: httpx.AsyncClient
    services: Services


@pytest.fixture
async def probe(tmp_path: Path) -> AsyncIterator[Probe]:
    services = build(offline_settings(tmp_path))
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield Probe(client, services)
    finally:
        await services.aclose()


async def test_a_hung_dependency_is_named_in_bounded_time(
    probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.3)

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def refuses() -> None:
        raise ConnectionRefusedError("nobody there")

    async def answers() -> None:
        return None

    probe.services.checks.update(kafka=hangs, redis=refuses, sockets=answers)
    # A deadline on waiting, not a measurement: without the bound the hung check never answers.
    reply = await asyncio.wait_for(probe.client.get("/health/ready"), 30)
    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body["code"] == "not_ready"
    problems = {e["field"]: e["message"] for e in body["errors"]}
    assert problems == {
        "kafka": "down: no answer in 0.3s",
        "redis": "down: ConnectionRefusedError",
    }


async def test_ready_when_every_dependency_answers(probe: Probe) -> None:
    reply = await probe.client.get("/health/ready")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["checks"] == {"database": "up"}


async def test_schema_of_the_embedded_database(probe: Probe) -> None:
    reply = await probe.client.get("/health/schema")
    assert reply.status_code == 503, reply.text
    assert reply.json()["data"]["current"] == []
    await upgrade(probe.services.engine)
    reply = await probe.client.get("/health/schema")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == {
        "current": list(code_heads()),
        "head": list(code_heads()),
        "missing_tables": [],
        "missing_columns": [],
    }
