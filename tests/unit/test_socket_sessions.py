"""Socket.IO connections belong to their session (DESIGN section 6), on the embedded server served
by uvicorn on loopback: a revoked session's sockets hear `session.revoked` once and are
disconnected within a second, and nothing pushed afterwards reaches them; other sessions' sockets
stay, a session opened after a revocation of every session included; a socket ends when its
token expires unless a newer token of its session came with the event `token`. And `/socket.io`
is inside the api's body limit, security headers and access log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from gatehouse.bootstrap import Services, build
from gatehouse.domain import events
from gatehouse.entrypoints.app import create_app
from gatehouse.outbox.relay import Relay
from gatehouse.realtime import sockets
from gatehouse.storage.migrate import upgrade
from gatehouse.web.one_write import OneWriteHttpProtocol
from tests.conftest import free_port, unique

from .helpers import offline_settings

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new horse battery staple"
WITHIN = 1.0  # seconds: a revoked session's sockets are gone by then (DESIGN section 6)
REVOKED = "session.revoked"
SKEW = "gatehouse.realtime.members.SKEW"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@dataclass
class Listener:
    """A Socket.IO client, what it heard, and when the server disconnected it."""

    client: socketio.AsyncClient
    heard: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    gone_at: float = 0.0  # time.monotonic()
    gone_wall: float = 0.0  # time.time()
    sid: str = ""

    async def next(self, timeout: float = 5) -> tuple[str, Any]:
        return await asyncio.wait_for(self.heard.get(), timeout)

    async def disconnected(self, since: float, within: float = WITHIN) -> float:
        """Seconds from `since` (time.monotonic) to the disconnection; fails past `within`."""
        await asyncio.wait_for(self.gone.wait(), within + 5)
        took = self.gone_at - since
        assert took <= within, f"disconnected after {took:.3f}s"
        return took

    def heard_now(self) -> list[tuple[str, Any]]:
        found = []
        while not self.heard.empty():
            found.append(self.heard.get_nowait())
        return found

    def ended_with(self) -> tuple[str, Any]:
        """The last thing it heard, which must be its one `session.revoked` (a change that ends
        every session also pushes its `security.notice` first)."""
        heard = self.heard_now()
        assert [event for event, _ in heard].count(REVOKED) == 1, heard
        return heard[-1]


@dataclass
class Served:
    url: str
    services: Services
    http: httpx.AsyncClient
    listeners: list[Listener] = field(default_factory=list)

    async def listener(self, token: str | None = None, polling: bool = False) -> Listener:
        listener = Listener(socketio.AsyncClient(reconnection=False))

        def gone(*_reason: Any) -> None:
            listener.gone_at, listener.gone_wall = time.monotonic(), time.time()
            listener.gone.set()

        listener.client.on("*", lambda event, data: listener.heard.put_nowait((event, data)))
        listener.client.on("disconnect", gone)
        await listener.client.connect(
            self.url,
            auth=None if token is None else {"token": token},
            transports=["polling"] if polling else ["websocket"],
            wait_timeout=10,
        )
        listener.sid = listener.client.get_sid()
        self.listeners.append(listener)
        return listener

    async def user(self) -> tuple[str, str]:
        """A verified account: its email and id (the code read from the outbox)."""
        email = f"{unique('sock')}@example.com"
        body = {"name": "Ada", "email": email, "password": PASSWORD}
        assert (await self.http.post("/api/auth/register", json=body)).status_code == 202
        services = self.services
        relay = Relay(
            services.outbox_store,
            services.publisher,
            batch=500,
            interval=0.01,
            clock=services.ctx.clock,
        )
        await relay.run_once()
        assert self.services.bus is not None
        keyring = self.services.ctx.keyring
        [code] = [
            keyring.decrypt(c["code_ciphertext"], events.code_context(c["id"]))
            for c in (json.loads(r.value) for r in self.services.bus.published)
            if c.get("to") == email and c.get("code_ciphertext")
        ]
        reply = await self.http.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert reply.status_code == 201, reply.text
        return email, str(reply.json()["data"]["user"]["id"])

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        reply = await self.http.post("/api/auth/login", json={"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["data"])

    async def push(self, room: str, payload: dict[str, Any]) -> None:
        await self.services.ctx.notifier.emit(room, "notification", payload)

    def rooms(self, listener: Listener) -> list[str]:
        return list(self.services.sockets.manager.get_rooms(listener.sid, "/"))


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[Served]:
    settings = offline_settings(
        tmp_path, rate_limits={}, answer_floor_ms=0, hash_workers=1, **overrides
    )
    services = build(settings)
    await upgrade(services.engine)
    app = sockets.mount(create_app(services, background=[sockets.sockets_role(services)]))
    port = free_port()
    server = uvicorn.Server(
        # On the api's own protocol (web/one_write.py): its upgrades and long polls too.
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            http=OneWriteHttpProtocol,
        )
    )
    task = asyncio.ensure_future(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        served = Served(url, services, http)
        try:
            yield served
        finally:
            for listener in served.listeners:
                await listener.client.disconnect()
            server.should_exit = True
            await asyncio.wait_for(task, 30)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serving(tmp_path) as running:
        yield running


async def test_a_token_socket_joins_its_user_and_its_session(served: Served) -> None:
    email, user_id = await served.user()
    session = await served.login(email)
    listener = await served.listener(session["token"])
    sid = listener.sid
    assert sorted(served.rooms(listener)) == sorted(
        [sid, f"user:{user_id}", f"session:{claims_of(session['token'])['sid']}"]
    )
    anonymous = await served.listener()
    assert served.rooms(anonymous) == [anonymous.sid]


async def test_logout_ends_the_sessions_sockets_and_only_them(served: Served) -> None:
    email, user_id = await served.user()
    mine, other = await served.login(email), await served.login(email)
    victims = [await served.listener(mine["token"]), await served.listener(mine["token"], True)]
    bystander = await served.listener(other["token"])
    session_id = claims_of(mine["token"])["sid"]

    start = time.monotonic()
    reply = await served.http.post(
        "/api/auth/logout", json={"refresh_token": mine["refresh_token"]}
    )
    assert reply.status_code == 200
    took = [await victim.disconnected(start) for victim in victims]
    print(f"\nlogout: sockets disconnected after {[round(t, 3) for t in took]} s")
    await served.push(f"user:{user_id}", {"after": "logout"})

    revoked = (REVOKED, {"session_id": session_id, "reason": "logout"})
    for victim in victims:
        assert victim.ended_with() == revoked  # once, though it was in both rooms; then nothing
        assert not victim.client.connected
    assert await bystander.next() == revoked  # the user's other devices hear which one ended
    assert await bystander.next() == ("notification", {"after": "logout"})
    assert bystander.client.connected and not bystander.gone.is_set()
    assert sockets.members_of(served.services.sockets).get(victims[0].sid) is None


async def test_deleting_a_session_ends_its_sockets(served: Served) -> None:
    email, user_id = await served.user()
    mine, other = await served.login(email), await served.login(email)
    victim, bystander = await served.listener(mine["token"]), await served.listener(other["token"])
    session_id = claims_of(mine["token"])["sid"]
    start = time.monotonic()
    reply = await served.http.delete(
        f"/api/auth/sessions/{session_id}", headers={"Authorization": f"Bearer {other['token']}"}
    )
    assert reply.status_code == 200, reply.text
    await victim.disconnected(start)
    await served.push(f"user:{user_id}", {"after": "delete"})
    assert victim.ended_with()[0] == REVOKED
    assert [event for event, _ in [await bystander.next(), await bystander.next()]] == [
        REVOKED,
        "notification",
    ]


Revoke = Callable[[Served, dict[str, Any]], Awaitable[httpx.Response]]


async def change_password(served: Served, session: dict[str, Any]) -> httpx.Response:
    return await served.http.patch(
        "/api/auth/profile",
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers={"Authorization": f"Bearer {session['token']}"},
    )


async def logout_everywhere(served: Served, session: dict[str, Any]) -> httpx.Response:
    body = {"refresh_token": session["refresh_token"], "everywhere": True}
    return await served.http.post("/api/auth/logout", json=body)


@pytest.mark.parametrize(
    ("revoke", "reason", "password"),
    [
        (change_password, "password_changed", NEW_PASSWORD),
        (logout_everywhere, "logout_everywhere", PASSWORD),
    ],
)
async def test_ending_every_session_ends_every_socket_but_not_a_session_opened_after(
    served: Served, revoke: Revoke, reason: str, password: str
) -> None:
    email, user_id = await served.user()
    mine, other = await served.login(email), await served.login(email)
    victims = [await served.listener(mine["token"]), await served.listener(other["token"])]
    start = time.monotonic()
    reply = await revoke(served, mine)
    assert reply.status_code == 200, reply.text
    for victim in victims:
        await victim.disconnected(start)
    # Signed in again at once: the new session's socket stays and hears what follows.
    again = await served.login(email, password)
    survivor = await served.listener(again["token"])
    await served.push(f"user:{user_id}", {"after": reason})
    assert await survivor.next() == ("notification", {"after": reason})
    for victim in victims:
        assert victim.ended_with() == (REVOKED, {"reason": reason})
    assert survivor.client.connected


async def test_deleting_the_account_ends_its_sockets(served: Served) -> None:
    email, _user_id = await served.user()
    session = await served.login(email)
    victim = await served.listener(session["token"])
    start = time.monotonic()
    reply = await served.http.request(
        "DELETE",
        "/api/auth/profile",
        json={"password": PASSWORD},
        headers={"Authorization": f"Bearer {session['token']}"},
    )
    assert reply.status_code == 200, reply.text
    await victim.disconnected(start)
    assert victim.ended_with() == (REVOKED, {"reason": "account_deleted"})


async def test_a_late_revocation_of_every_session_spares_the_sockets_opened_after_it(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a node that hears a revocation late (on Redis, `sent_at` says when it was
    published): sockets checked well before it end, sockets checked well after it stay."""
    monkeypatch.setattr(SKEW, 0.2)
    email, user_id = await served.user()
    old = await served.listener((await served.login(email))["token"])
    await asyncio.sleep(0.5)
    revoked_at = time.time()
    await asyncio.sleep(0.5)
    new = await served.listener((await served.login(email))["token"])
    members = sockets.members_of(served.services.sockets)
    revocation = members.revoking(REVOKED, {"reason": "x"}, f"user:{user_id}", revoked_at)
    assert revocation is not None
    assert revocation.told == [old.sid] and revocation.skip == [new.sid]
    assert f"user:{user_id}" not in served.rooms(old)  # out of the room before any delivery
    start = time.monotonic()
    members.finish(revocation)
    await old.disconnected(start)
    await served.push(f"user:{user_id}", {"after": "late"})
    assert await new.next() == ("notification", {"after": "late"})
    assert old.heard_now() == []


async def test_sockets_checked_about_when_every_session_ended_are_asked_of_the_database(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SKEW, 30.0)  # every socket here is "about then"
    email, user_id = await served.user()
    mine = await served.login(email)
    victim = await served.listener(mine["token"])
    start = time.monotonic()
    assert (await change_password(served, mine)).status_code == 200
    await victim.disconnected(start)  # its session is revoked in the database: it ends
    assert victim.ended_with() == (REVOKED, {"reason": "password_changed"})
    survivor = await served.listener((await served.login(email, NEW_PASSWORD))["token"])
    # A revocation of every session heard now (late, say): the new session is live, so its
    # socket, out of its rooms while that is read, comes back without hearing it.
    await served.services.ctx.notifier.emit(f"user:{user_id}", REVOKED, {"reason": "x"})
    async with asyncio.timeout(5):
        while f"user:{user_id}" not in served.rooms(survivor):
            await asyncio.sleep(0.01)
    await served.push(f"user:{user_id}", {"after": "check"})
    assert await survivor.next() == ("notification", {"after": "check"})
    assert survivor.client.connected


@pytest.mark.parametrize("every_session", [False, True])
async def test_a_revocation_heard_while_the_token_is_checked_refuses_the_connection(
    served: Served, monkeypatch: pytest.MonkeyPatch, every_session: bool
) -> None:
    """The connection's database read began before the revocation was committed, and the
    revocation was delivered before the socket joined its rooms."""
    email, _ = await served.user()
    session = await served.login(email)
    real = sockets.authenticate
    calls = 0

    async def racing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await real(*args)
        if calls == 1:
            if every_session:
                await logout_everywhere(served, session)
            else:
                await served.http.post(
                    "/api/auth/logout", json={"refresh_token": session["refresh_token"]}
                )
        return found

    monkeypatch.setattr(sockets, "authenticate", racing)
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(
            served.url, auth={"token": session["token"]}, transports=["websocket"]
        )
    # Every session: read again (and refused then); one session: refused at once.
    assert calls == (2 if every_session else 1)


async def test_a_revocation_of_every_session_heard_during_the_check_of_a_new_one_is_read_again(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, user_id = await served.user()
    session = await served.login(email)
    real = sockets.authenticate
    calls = 0

    async def racing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await real(*args)
        if calls == 1:  # an older revocation of every session, heard late
            await served.services.ctx.notifier.emit(f"user:{user_id}", REVOKED, {"reason": "x"})
        return found

    monkeypatch.setattr(sockets, "authenticate", racing)
    listener = await served.listener(session["token"])
    assert calls == 2 and listener.client.connected


async def test_a_socket_ends_when_its_token_expires_and_a_refused_token_changes_nothing(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, access_token_ttl_seconds=2) as served:
        email, _ = await served.user()
        mine, other = await served.login(email), await served.login(email)
        listener = await served.listener(mine["token"])
        assert await listener.client.call("token", other["token"], timeout=5) == {
            "status": "error",
            "message": "The token belongs to another session",
            "code": "wrong_session",
        }
        assert (await listener.client.call("token", "not a token", timeout=5))["code"] == (
            "invalid_token"
        )
        assert (await listener.client.call("token", mine["token"], timeout=5))["code"] == (
            "not_newer"
        )
        expires = claims_of(mine["token"])["exp"]
        await asyncio.wait_for(listener.gone.wait(), 5)
        late = listener.gone_wall - expires
        print(f"\nexpiry: disconnected {late:.3f}s after the token's exp")
        assert -0.05 <= late <= WITHIN


async def test_a_newer_token_of_the_same_session_moves_the_deadline(tmp_path: Path) -> None:
    async with serving(tmp_path, access_token_ttl_seconds=3) as served:
        email, _ = await served.user()
        first = await served.login(email)
        listener = await served.listener(first["token"])
        await asyncio.sleep(1.1)  # a token issued a second later expires a second later
        reply = await served.http.post(
            "/api/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        renewed = reply.json()["data"]["token"]
        assert claims_of(renewed)["exp"] > claims_of(first["token"])["exp"]
        ack = await listener.client.call("token", {"token": renewed}, timeout=5)
        assert ack["status"] == "success" and 0 < ack["data"]["expires_in"] <= 3
        await asyncio.sleep(max(0.0, claims_of(first["token"])["exp"] - time.time() + 0.4))
        assert listener.client.connected and not listener.gone.is_set()
        await asyncio.wait_for(listener.gone.wait(), 5)
        late = listener.gone_wall - claims_of(renewed)["exp"]
        print(f"\nrenewed: disconnected {late:.3f}s after the new token's exp")
        assert -0.05 <= late <= WITHIN


async def test_an_anonymous_socket_has_no_token_to_renew(served: Served) -> None:
    anonymous = await served.listener()
    ack = await anonymous.client.call("token", "x", timeout=5)
    assert ack["code"] == "no_session"


async def raw_socket(served: Served, token: str) -> Any:
    """An Engine.IO websocket spoken by hand, connected to `/` with the token."""
    url = served.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    raw = await ws_connect(url)
    opened = await raw.recv()
    assert str(opened).startswith("0")
    await raw.send("40" + json.dumps({"token": token}))
    assert str(await raw.recv()).startswith("40")
    return raw


async def test_a_client_that_ignores_the_disconnection_loses_its_connection(
    served: Served,
) -> None:
    email, user_id = await served.user()
    session = await served.login(email)
    raw = await raw_socket(served, session["token"])
    start = time.monotonic()
    await served.http.post("/api/auth/logout", json={"refresh_token": session["refresh_token"]})
    received: list[str] = []
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(WITHIN):
            while True:
                received.append(str(await raw.recv()))
    took = time.monotonic() - start
    await served.push(f"user:{user_id}", {"after": "close"})
    assert received[0].startswith('42["session.revoked"')
    assert received[1:] == ["41", "1"]  # the namespace's disconnection, Engine.IO's close
    print(f"\nignoring client: connection closed after {took:.3f}s")


def access_lines(caplog: pytest.LogCaptureFixture, rid: str) -> list[dict[str, Any]]:
    found = (r.__dict__.get("access") for r in caplog.records if r.name == "gatehouse.access")
    return [fields for fields in found if fields and fields["request_id"] == rid]


async def test_a_websocket_gets_a_request_id_and_one_access_log_line_when_it_closes(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    email, _ = await served.user()
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        raw = await raw_socket(served, (await served.login(email))["token"])
        rid = raw.response.headers["x-request-id"]
        assert access_lines(caplog, rid) == []  # written when it closes
        await raw.close()
        async with asyncio.timeout(5):
            while not access_lines(caplog, rid):
                await asyncio.sleep(0.01)
    [line] = access_lines(caplog, rid)
    assert (line["method"], line["route"], line["status"]) == ("GET", "/socket.io", 101)


async def test_a_websocket_message_over_the_body_limit_ends_the_connection(
    served: Served,
) -> None:
    email, _ = await served.user()
    raw = await raw_socket(served, (await served.login(email))["token"])
    limit = served.services.settings.max_body_bytes
    await raw.send("42" + json.dumps(["token", "x" * limit]))
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await raw.recv()


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app with Socket.IO mounted, through httpx's ASGI transport (long-polling only)."""
    services = build(offline_settings(tmp_path))
    try:
        app = sockets.mount(create_app(services, close_services=False))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, services
        await services.sockets.shutdown()
    finally:
        await services.aclose()


POLLING = "/socket.io/?EIO=4&transport=polling"


async def test_long_polling_answers_carry_the_security_headers_and_a_logged_id(
    in_process: tuple[httpx.AsyncClient, Services], caplog: pytest.LogCaptureFixture
) -> None:
    client, services = in_process
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        reply = await client.get(POLLING)
    assert reply.status_code == 200
    for name in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert name in reply.headers
    assert reply.headers["cache-control"] == "no-store"  # pushes carry tokens
    handshake = json.loads(reply.text[1:])
    assert handshake["maxPayload"] == services.settings.max_body_bytes
    [fields] = access_lines(caplog, reply.headers["x-request-id"])
    assert (fields["method"], fields["route"], fields["status"]) == ("GET", "/socket.io", 200)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_long_polling_body_over_the_limit_is_refused_like_any_other(
    in_process: tuple[httpx.AsyncClient, Services], chunked: bool
) -> None:
    client, _ = in_process
    sid = json.loads((await client.get(POLLING)).text[1:])["sid"]
    body = b"4" + b"x" * (200 * 1024)

    async def stream() -> AsyncIterator[bytes]:
        for at in range(0, len(body), 16 * 1024):
            yield body[at : at + 16 * 1024]

    reply = await client.post(
        f"{POLLING}&sid={sid}",
        content=stream() if chunked else body,
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert reply.status_code == 413
    assert reply.json() == {
        "status": "error",
        "message": "Request body too large",
        "code": "payload_too_large",
        "errors": [],
    }
    assert "content-security-policy" in reply.headers
