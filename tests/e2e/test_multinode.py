"""Two `gatehouse api` nodes and two `gatehouse worker`s on one Redis (plus a relay and a courier):
a client on node 1 receives the results of jobs whichever worker ran them, and a client on node 2
hears what node 1's flows and the workers push to its user room."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio
from bullmq import Queue

from tests.conftest import MailSink, unique
from tests.e2e.stack import Stack, mailed_code, module_mail_sink, stack_fixture

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
PASSWORD = "correct horse battery staple"
PROCESSED = re.compile(r"processed job verify-user/(\S+) ")


stack = stack_fixture(
    "multinode",
    {
        "api1": "api",
        "api2": "api",
        "worker1": "worker",
        "worker2": "worker",
        "relay": "relay",
        "courier": "courier",
    },
)


@pytest.fixture
async def sockets() -> AsyncIterator[list[socketio.AsyncClient]]:
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        await client.disconnect()


async def connect(
    url: str, made: list[socketio.AsyncClient], token: str | None = None
) -> tuple[socketio.AsyncClient, asyncio.Queue[tuple[str, dict[str, object]]]]:
    """A client and the queue of every (event, payload) it receives."""
    client = socketio.AsyncClient(reconnection=False)
    heard: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue()
    client.on("*", lambda event, payload: heard.put_nowait((event, payload)))
    await client.connect(
        url, auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10
    )
    made.append(client)
    return client, heard


async def test_a_client_on_one_node_gets_results_from_either_worker(
    stack: Stack, sockets: list[socketio.AsyncClient]
) -> None:
    client, heard = await connect(stack.roles["api1"].url, sockets)
    queue = Queue("verify-user", {"connection": stack.env["GATEHOUSE_REDIS_URL"]})
    submitted: list[str] = []
    try:
        # Login attempts for unknown accounts: each costs a real password hash, so a burst is more
        # than one worker's ten slots and the other worker takes some. Bursts repeat (bounded)
        # until the logs show both at work.
        for burst in range(10):
            ids = [unique(f"multi{burst}") for _ in range(30)]
            for job_id in ids:
                data = {
                    "email": f"{job_id}@example.com",
                    "password": "x",
                    "notify": client.get_sid(),
                }
                await queue.add("verify-user", data, {"jobId": job_id})
            submitted += ids
            received: dict[str, dict[str, object]] = {}
            async with asyncio.timeout(60):
                while len(received) < len(ids):
                    event, payload = await heard.get()
                    assert event == "notification"
                    received[str(payload["job_id"])] = payload
            assert set(received) == set(ids)
            assert all(p["success"] is False for p in received.values())
            assert all(p["code"] == "invalid_credentials" for p in received.values())
            by_worker = {
                name: set(PROCESSED.findall(stack.roles[name].text()))
                for name in ("worker1", "worker2")
            }
            if all(by_worker.values()):
                break
    finally:
        await queue.close()
    print(f"\njobs per worker: { {n: len(ids) for n, ids in by_worker.items()} }")
    assert all(by_worker.values()), by_worker  # both workers ran some ...
    assert by_worker["worker1"] | by_worker["worker2"] == set(submitted)  # ... all were run ...
    assert not by_worker["worker1"] & by_worker["worker2"]  # ... each once


async def test_a_client_on_node_two_hears_node_one_and_the_workers(
    stack: Stack, sockets: list[socketio.AsyncClient], module_mail_sink: MailSink
) -> None:
    node1, node2 = stack.roles["api1"].url, stack.roles["api2"].url
    email = f"{unique('multi')}@example.com"
    async with httpx.AsyncClient(base_url=node1, timeout=30) as http:
        reply = await http.post(
            "/api/auth/register", json={"name": "Lin", "email": email, "password": PASSWORD}
        )
        assert reply.status_code == 202, reply.text
        code = await mailed_code(module_mail_sink, email, 1)
        reply = await http.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert reply.status_code == 201, reply.text
        user_id = reply.json()["data"]["user"]["id"]
        login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        session = login.json()["data"]

        _client, heard = await connect(node2, sockets, session["token"])
        # A job's result for the user's room, run by a worker, reaches node 2.
        reply = await http.post(
            "/api/jobs/read-user",
            json={"data": {"token": session["token"], "notify": f"user:{user_id}"}},
        )
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["data"]["job_id"]
        event, payload = await asyncio.wait_for(heard.get(), 30)
        assert event == "notification" and payload["job_id"] == job_id
        assert payload["success"] is True and payload["data"]["user"]["email"] == email

        # Logging out on node 1: its flow pushes session.revoked, heard on node 2.
        reply = await http.post(
            "/api/auth/logout", json={"refresh_token": session["refresh_token"]}
        )
        assert reply.status_code == 200, reply.text
        event, payload = await asyncio.wait_for(heard.get(), 30)
        assert (event, payload["reason"]) == ("session.revoked", "logout")
        assert payload["session_id"]  # which session ended: the user's other devices stay
