"""Sockets belong to their session, across processes: two `gatehouse api` nodes on one Redis (with a
worker, a relay and a courier). A socket on node 2 whose session ends through node 1 hears
`session.revoked` and is disconnected within a second, and later pushes to its user's room do not
reach it (a Node socket.io-client victim, and python-socketio ones); a socket ends when its
access token expires unless it handed over a newer one with `token`; and `/socket.io` of a real
api process is inside its body limit and security headers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MailSink, unique
from tests.e2e.stack import Stack, mailed_code, module_mail_sink, run_node, stack_fixture

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new horse battery staple"
TOKEN_SECONDS = 8  # short, for the expiry tests; every other step here takes well under that
WITHIN = 1.0


# Every process issues and judges short tokens, for the expiry tests.
stack = stack_fixture(
    "socket-sessions",
    {"api1": "api", "api2": "api", "worker": "worker", "relay": "relay", "courier": "courier"},
    {"GATEHOUSE_ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_SECONDS)},
)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def signed_up(stack: Stack, sink: MailSink) -> str:
    """A verified account, signed up on node 1; its email."""
    email = f"{unique('sockets')}@example.com"
    async with httpx.AsyncClient(base_url=stack.roles["api1"].url, timeout=30) as http:
        body = {"name": "Lin", "email": email, "password": PASSWORD}
        assert (await http.post("/api/auth/register", json=body)).status_code == 202
        code = await mailed_code(sink, email, 1)
        reply = await http.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert reply.status_code == 201, reply.text
    return email


async def test_a_node_socket_on_node_two_ends_with_its_session_ended_on_node_one(
    stack: Stack, module_mail_sink: MailSink, tmp_path: Path
) -> None:
    email = await signed_up(stack, module_mail_sink)
    env = {
        "API1": stack.roles["api1"].url,
        "API2": stack.roles["api2"].url,
        "REDIS_URL": stack.env["GATEHOUSE_REDIS_URL"],
        "EMAIL": email,
        "PASSWORD": PASSWORD,
        "NEW_PASSWORD": NEW_PASSWORD,
    }
    lines = await run_node("socket_sessions.mjs", env, module_mail_sink, tmp_path)
    print("\nNode victim (socket.io-client on node 2, revoked through node 1):")
    for line in lines:
        print(json.dumps(line))
    steps = {line["step"]: line for line in lines if "step" in line}
    assert list(steps) == ["logout", "delete-session", "password"]
    expected = {
        "logout": {"session_id": steps["logout"]["session_id"], "reason": "logout"},
        "delete-session": {
            "session_id": steps["delete-session"]["session_id"],
            "reason": "session_deleted",
        },
        "password": {"reason": "password_changed"},
    }
    for step, line in steps.items():
        assert line["status"] == 200, line
        assert line["revoked"] == [expected[step]], line  # heard once
        assert line["victim_events"][-1] == "session.revoked", line  # and nothing after it
        assert "notification" not in line["victim_events"], line
        assert line["reason"] == "io server disconnect", line
        assert line["disconnected_after_ms"] <= WITHIN * 1000, line
        assert not line["victim_connected"], line
        # The verify-user result (with a refresh token) went to the user's room: a live
        # socket heard it.
        assert line["witness_heard_result"] and line["witness_connected"], line


@pytest.fixture
async def clients() -> AsyncIterator[list[socketio.AsyncClient]]:
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        await client.disconnect()


async def watch(
    url: str, token: str, made: list[socketio.AsyncClient]
) -> tuple[socketio.AsyncClient, asyncio.Queue[tuple[str, Any]], asyncio.Future[float]]:
    """A client with every event it hears and the time (monotonic) it was disconnected."""
    client = socketio.AsyncClient(reconnection=False)
    heard: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    gone: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    client.on("*", lambda event, data: heard.put_nowait((event, data)))
    client.on("disconnect", lambda *_: gone.done() or gone.set_result(time.monotonic()))
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    made.append(client)
    return client, heard, gone


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    reply = await http.post("/api/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["data"])


async def test_logout_everywhere_on_node_one_ends_the_sockets_on_both_nodes(
    stack: Stack, module_mail_sink: MailSink, clients: list[socketio.AsyncClient]
) -> None:
    email = await signed_up(stack, module_mail_sink)
    node1, node2 = stack.roles["api1"].url, stack.roles["api2"].url
    async with httpx.AsyncClient(base_url=node1, timeout=30) as http:
        mine, other = await login(http, email), await login(http, email)
        sockets = [
            await watch(node2, mine["token"], clients),
            await watch(node1, other["token"], clients),
        ]
        start = time.monotonic()
        body = {"refresh_token": mine["refresh_token"], "everywhere": True}
        assert (await http.post("/api/auth/logout", json=body)).status_code == 200
        took = [await asyncio.wait_for(gone, 10) - start for _, _, gone in sockets]
        print(f"\nlogout everywhere: disconnected after {[round(t, 3) for t in took]} s")
        assert all(t <= WITHIN for t in took), took
        # Signed in again at once, on node 2: this socket is not ended by the revocation.
        again = await login(http, email)
        survivor, heard, gone = await watch(node2, again["token"], clients)
        await asyncio.sleep(0.5)
        assert survivor.connected and not gone.done() and heard.empty()
    for _, heard, _ in sockets:
        assert heard.get_nowait() == ("session.revoked", {"reason": "logout_everywhere"})
        assert heard.empty()


async def test_a_socket_ends_with_its_token_unless_a_newer_one_of_its_session_came(
    stack: Stack, module_mail_sink: MailSink, clients: list[socketio.AsyncClient]
) -> None:
    email = await signed_up(stack, module_mail_sink)
    node1, node2 = stack.roles["api1"].url, stack.roles["api2"].url
    async with httpx.AsyncClient(base_url=node1, timeout=30) as http:
        kept, lapsed = await login(http, email), await login(http, email)
        renewing, _, renewing_gone = await watch(node2, kept["token"], clients)
        expiring, _, expiring_gone = await watch(node2, lapsed["token"], clients)
        # Refused: another session's token, and the same token again. Nothing changes.
        refused = await expiring.call("token", kept["token"], timeout=10)
        assert refused["code"] == "wrong_session"
        assert (await expiring.call("token", lapsed["token"], timeout=10))["code"] == "not_newer"
        await asyncio.sleep(1.1)  # a token issued a second later expires a second later
        reply = await http.post("/api/auth/refresh", json={"refresh_token": kept["refresh_token"]})
        newer = reply.json()["data"]["token"]
        ack = await renewing.call("token", {"token": newer}, timeout=10)
        assert ack["status"] == "success", ack

    first_exp, newer_exp = claims_of(lapsed["token"])["exp"], claims_of(newer)["exp"]
    assert newer_exp > claims_of(kept["token"])["exp"]
    await asyncio.wait_for(asyncio.shield(expiring_gone), TOKEN_SECONDS + 5)
    lapsed_late = time.time() - first_exp
    assert renewing.connected and not renewing_gone.done()
    await asyncio.wait_for(asyncio.shield(renewing_gone), TOKEN_SECONDS + 5)
    renewed_late = time.time() - newer_exp
    print(f"\nexpiry: ended {lapsed_late:.3f}s after exp; renewed one {renewed_late:.3f}s after")
    assert -0.1 <= lapsed_late <= WITHIN and -0.1 <= renewed_late <= WITHIN


async def test_socketio_of_a_real_api_is_inside_its_body_limit_and_headers(stack: Stack) -> None:
    url = stack.roles["api1"].url
    polling = "/socket.io/?EIO=4&transport=polling"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        opened = await http.get(polling)
        assert opened.status_code == 200
        for name in ("content-security-policy", "x-frame-options", "x-request-id"):
            assert name in opened.headers, opened.headers
        assert opened.headers["cache-control"] == "no-store"
        handshake = json.loads(opened.text[1:])
        too_big = await http.post(
            f"{polling}&sid={handshake['sid']}",
            content=b"4" + b"x" * (200 * 1024),
            headers={"content-type": "text/plain;charset=UTF-8"},
        )
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "payload_too_large"
    assert "content-security-policy" in too_big.headers
    # A websocket message past the limit: the server closes the connection.
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(ws_url) as raw:
        assert str(await raw.recv()).startswith("0")
        await raw.send("40")
        assert str(await raw.recv()).startswith("40")
        await raw.send("42" + json.dumps(["token", "x" * handshake["maxPayload"]]))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await raw.recv()
