"""The HTTP api in-process for the unit suite: real Services (SQLite in a temp dir, embedded bus),
migrations, the FastAPI app driven through httpx's ASGI transport (the `api` fixture)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gatehouse.bootstrap import Services, build
from gatehouse.domain import events
from gatehouse.entrypoints.app import create_app
from gatehouse.outbox.relay import Relay
from gatehouse.security import memory
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.schema import outbox, pending_registrations, refresh_tokens, users

from .helpers import FakeClock, offline_settings

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
TABLES = (users, pending_registrations, outbox, refresh_tokens)


@dataclass
class Api:
    client: httpx.AsyncClient
    services: Services
    clock: FakeClock

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(path, json=body)

    async def post_raw(self, path: str, content: bytes) -> httpx.Response:
        return await self.client.post(
            path, content=content, headers={"content-type": "application/json"}
        )

    async def counts(self) -> dict[str, int]:
        async with self.services.engine.connect() as conn:
            return {
                t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in TABLES
            }

    async def sent_codes(self, email: str) -> list[str]:
        """Publish the outbox to the embedded bus (as the relay does) and open every code
        mailed to `email` (as the courier does)."""
        relay = Relay(
            self.services.outbox_store,
            self.services.publisher,
            batch=500,
            interval=0.01,
            clock=self.services.ctx.clock,
        )
        await relay.run_once()
        assert self.services.bus is not None
        commands = [
            json.loads(r.value) for r in self.services.bus.published if r.topic == events.SEND_OTP
        ]
        keyring = self.services.ctx.keyring
        return [
            keyring.decrypt(c["code_ciphertext"], events.code_context(c["id"]))
            for c in commands
            if c["to"] == email and c.get("code_ciphertext")
        ]

    async def signed_up(self, email: str = EMAIL) -> dict[str, Any]:
        response = await self.post(
            "/api/auth/register", {"name": "Ada", "email": email, "password": PASSWORD}
        )
        assert response.status_code == 202
        [code] = (await self.sent_codes(email))[-1:]
        response = await self.post("/api/auth/verify-otp", {"email": email, "otp": code})
        assert response.status_code == 201, response.text
        user: dict[str, Any] = response.json()["data"]["user"]
        return user

    async def logged_in(self, email: str = EMAIL) -> dict[str, Any]:
        response = await self.post("/api/auth/login", {"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@contextlib.asynccontextmanager
async def open_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    settings = offline_settings(
        tmp_path,
        env="development",
        jwt_algorithms=["EdDSA"],
        jwt_secret="",
        argon2_parallelism=1,
        hash_workers=2,
        rate_limits={},  # off here: tests/unit/test_abuse.py exercises them
        answer_floor_ms=0,  # likewise: tests/unit/test_abuse.py checks the floor
    )
    clock = FakeClock()
    # The embedded code store keeps time with time.monotonic: make it follow the same clock.
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=clock.monotonic))
    services = build(settings, clock=clock)
    try:
        await upgrade(services.engine)
        app = create_app(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield Api(client, services, clock)
    finally:
        await services.aclose()
