"""Socket.IO served by the api in-process (uvicorn on loopback), with Redis and embedded: a token
joins `user:<id>`, anonymous clients are reached by sid, bad tokens are refused, flows push
`session.revoked`, and a job submitted at the HTTP door pushes its `notification`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import socketio
import uvicorn

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.worker import worker_role
from gatehouse.realtime import sockets
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.sessions import rotation as session
from gatehouse.storage.migrate import upgrade
from tests.conftest import free_port
from tests.e2e.stack import own_redis_db
from tests.integration.conftest import verified_user

PASSWORD = "correct horse battery staple"
ALLOWED_ORIGIN = "https://app.example.com"
Heard = asyncio.Queue[tuple[str, Any]]


@dataclass
class Served:
    url: str
    services: Services
    clients: list[socketio.AsyncClient]

    async def client(self, token: Any = None) -> tuple[socketio.AsyncClient, Heard]:
        """A connected client and every (event, payload) it hears."""
        client = socketio.AsyncClient(reconnection=False)
        heard: Heard = asyncio.Queue()
        client.on("*", lambda event, payload: heard.put_nowait((event, payload)))
        await client.connect(
            self.url,
            auth=None if token is None else {"token": token},
            transports=["websocket"],
            wait_timeout=10,
        )
        self.clients.append(client)
        return client, heard

    async def refusal(self, token: Any) -> dict[str, Any]:
        """What the server answers a connection it refuses."""
        client = socketio.AsyncClient(reconnection=False)
        refused: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        client.on("connect_error", refused.set_result)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                self.url, auth={"token": token}, transports=["websocket"], wait_timeout=10
            )
        return await asyncio.wait_for(refused, 10)

    async def user(self) -> tuple[str, session.Session]:
        """A verified user, signed up through the flows (the code read from the outbox)."""
        email, user = await verified_user(self.services, "sock", PASSWORD)
        ctx = self.services.ctx
        return user["id"], await login_flow.login(ctx, email=email, password=PASSWORD)


@pytest.fixture(params=["redis", "embedded"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = ""
        if request.param == "redis":
            redis_url = stack.enter_context(own_redis_db(request.getfixturevalue("redis_url")))
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite+aiosqlite:///{tmp_path}/sockets.db",
            secrets_file=tmp_path / "secrets.json",
            redis_url=redis_url,
            kafka_bootstrap_servers="",
            smtp_url="",
            rate_limits={},
            cors_origins=[ALLOWED_ORIGIN],
            argon2_memory_kib=1024,
            argon2_time_cost=1,
            hash_workers=1,
        )
        services = build(settings)
        await upgrade(services.engine)
        background = [sockets.sockets_role(services), worker_role()(services)]
        app = sockets.mount(create_app(services, background=background))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        serving = asyncio.ensure_future(server.serve())
        async with asyncio.timeout(30):
            while not server.started or ("sockets" in services.checks and not await _ok(services)):
                await asyncio.sleep(0.02)
        served = Served(f"http://127.0.0.1:{port}", services, [])
        try:
            yield served
        finally:
            for client in served.clients:
                await client.disconnect()
            server.should_exit = True
            await asyncio.wait_for(serving, 30)


async def _ok(services: Services) -> bool:
    try:
        await services.checks["sockets"]()
    except RuntimeError:
        return False
    return True


async def test_a_token_joins_the_users_room_and_anonymous_clients_are_reached_by_sid(
    served: Served,
) -> None:
    user_id, opened = await served.user()
    other_id, _ = await served.user()
    _mine, mine = await served.client(opened.token)
    anonymous, theirs = await served.client()
    notifier = served.services.ctx.notifier
    await notifier.emit(f"user:{other_id}", "notification", {"for": "someone else"})
    await notifier.emit(f"user:{user_id}", "notification", {"for": "me"})
    await notifier.emit(anonymous.get_sid(), "notification", {"for": "the anonymous client"})
    assert await asyncio.wait_for(mine.get(), 10) == ("notification", {"for": "me"})
    assert await asyncio.wait_for(theirs.get(), 10) == (
        "notification",
        {"for": "the anonymous client"},
    )
    assert mine.empty() and theirs.empty()  # pushed in order: the others' came first, or never


async def test_bad_tokens_are_refused_not_made_anonymous(served: Served) -> None:
    user_id, opened = await served.user()
    ctx = served.services.ctx
    expired, _ = ctx.tokens.issue(user_id, "a-session", datetime.now(UTC) - timedelta(hours=1))
    await session.logout(ctx, refresh_token=opened.refresh_token)
    for token in (opened.token[:-4] + "AAAA", expired, opened.token, "not a jwt", 42):
        refusal = await served.refusal(token)
        assert refusal == {"message": "Invalid or expired token", "data": {"code": "invalid_token"}}


async def test_flows_push_session_revoked_to_the_users_sockets(served: Served) -> None:
    _user_id, opened = await served.user()
    _client, heard = await served.client(opened.token)
    ctx = served.services.ctx
    sid = ctx.tokens.verify(opened.token, ctx.clock()).sid
    await session.logout(ctx, refresh_token=opened.refresh_token)
    revoked = {"session_id": sid, "reason": "logout"}  # to `user:<id>` and `session:<sid>`
    assert await asyncio.wait_for(heard.get(), 10) == ("session.revoked", revoked)


async def test_a_job_from_the_http_door_pushes_its_result_to_the_sid_it_names(
    served: Served,
) -> None:
    user_id, opened = await served.user()
    anonymous, heard = await served.client()
    async with httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.post(
            "/api/jobs/read-user",
            json={"data": {"token": opened.token, "notify": anonymous.get_sid()}},
        )
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["data"]["job_id"]
        event, note = await asyncio.wait_for(heard.get(), 30)
        assert event == "notification" and note["job_id"] == job_id and note["queue"] == "read-user"
        assert note["success"] is True and note["data"]["user"]["id"] == user_id
        # The worker pushes the result as soon as it has it; BullMQ marks the job completed a
        # moment later, so the state is read until it is final.
        async with asyncio.timeout(10):
            while True:
                state = (await http.get(f"/api/jobs/read-user/{job_id}")).json()["data"]
                if state["state"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.02)
    assert state["state"] == "completed" and state["result"]["data"]["user"]["id"] == user_id


async def test_a_sign_in_job_pushes_its_tokens_to_the_room_but_rests_without_them(
    served: Served,
) -> None:
    user_id, opened = await served.user()
    email = opened.user["email"]
    anonymous, heard = await served.client()
    async with httpx.AsyncClient(base_url=served.url) as http:
        body = {"data": {"email": email, "password": PASSWORD, "notify": anonymous.get_sid()}}
        reply = await http.post("/api/jobs/verify-user", json=body)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["data"]["job_id"]
        event, note = await asyncio.wait_for(heard.get(), 30)
        assert event == "notification" and note["job_id"] == job_id and note["success"] is True
        # The room hears usable credentials: the token names this user, the refresh token is real.
        ctx = served.services.ctx
        assert ctx.tokens.verify(note["data"]["token"], ctx.clock()).sub == user_id
        refreshed = await session.refresh(ctx, refresh_token=note["data"]["refresh_token"])
        assert refreshed.user["id"] == user_id
        async with asyncio.timeout(10):
            while True:
                state = (await http.get(f"/api/jobs/verify-user/{job_id}")).json()["data"]
                if state["state"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.02)
    kept = state["result"]["data"]
    assert kept["token"] == kept["refresh_token"] == "[redacted]" and kept["user"]["id"] == user_id
    redis_url = served.services.settings.redis_url
    if redis_url:  # what BullMQ wrote, read straight from Redis
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            raw = await client.hget(f"bull:verify-user:{job_id}", "returnvalue")
        assert raw is not None and b"[redacted]" in raw
        for secret in (note["data"]["token"], note["data"]["refresh_token"]):
            assert secret.encode() not in raw


async def test_the_handshake_origin_is_checked_against_the_allowlist(served: Served) -> None:
    allowed = socketio.AsyncClient(reconnection=False)
    await allowed.connect(
        served.url, headers={"Origin": ALLOWED_ORIGIN}, transports=["websocket"], wait_timeout=10
    )
    served.clients.append(allowed)
    assert allowed.connected
    foreign = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await foreign.connect(
            served.url,
            headers={"Origin": "https://evil.example"},
            transports=["websocket"],
            wait_timeout=10,
        )
    assert not foreign.connected
