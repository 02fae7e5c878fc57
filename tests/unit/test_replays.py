"""Replayed answers (web/replays.py): a profile read that the signed-in cache answered is given
again to the same Authorization header, through the access log alone, exactly while the cache
still holds that user for that session and the token has not expired. Every change that
empties the entry (an update, a logout, a password change, an admin disable, the channel lost)
ends the replay at once; an expired or different token is never given another's answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from gatehouse.admin import users as admin
from gatehouse.selfservice.profile import flow as profile_flow
from gatehouse.selfservice.sessions.cache import SignedInCache
from gatehouse.selfservice.sessions.invalidating import invalidating_units
from gatehouse.web.replays import REPLAYABLE, Replays, key_of

from .api_client import PASSWORD, Api
from .test_hot_front import Front, seen
from .test_hot_routes import app_of
from .test_signed_in_cache import Channel, Tick

PROFILE = "/api/auth/profile"


class Cached:
    """The api with a signed-in cache on an in-process channel, its hot front, and a count of
    the profile reads that ran the flow (a replay runs none)."""

    def __init__(self, api: Api, monkeypatch: pytest.MonkeyPatch):
        self.api, self.tick = api, Tick()
        self.cache = SignedInCache(clock=self.tick)
        self.cache.heard()
        self.channel = Channel(self.cache)
        ctx = api.services.ctx
        api.services.ctx = replace(
            ctx, signed_in=self.cache, uow=invalidating_units(ctx.uow, self.channel)
        )
        self.front = Front(app_of(api))
        self.flow_reads = 0
        read_held = profile_flow.read_held

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.flow_reads += 1
            return await read_held(*args, **kwargs)

        monkeypatch.setattr(profile_flow, "read_held", counted)

    async def read(self, token: str, scheme: str = "Bearer") -> httpx.Response:
        headers = {"Authorization": f"{scheme} {token}"}
        return await self.front.client.get(PROFILE, headers=headers)

    async def patch(self, token: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self.front.client.patch(PROFILE, json=body, headers=headers)


@pytest.fixture
async def cached(api: Api, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cached]:
    made = Cached(api, monkeypatch)
    async with made.front.client:
        yield made


async def signed_in(cached: Cached) -> dict[str, Any]:
    await cached.api.signed_up()
    return await cached.api.logged_in()


async def test_a_second_read_is_the_first_answer_given_again_with_its_own_request_id(
    cached: Cached, caplog: pytest.LogCaptureFixture
) -> None:
    session = await signed_in(cached)
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        first, again, third = [await cached.read(session["token"]) for _ in range(3)]
    assert cached.flow_reads == 1  # the first ran the flow; the others were replayed
    assert seen(first) == seen(again) == seen(third)  # status, body, every header
    ids = {r.headers["x-request-id"] for r in (first, again, third)}
    assert len(ids) == 3, "each answer has its own request id"
    lines = [r for r in caplog.records if getattr(r, "access", {}).get("route") == PROFILE]
    assert [line.access["status"] for line in lines] == [200, 200, 200]  # type: ignore[attr-defined]
    assert {line.access["request_id"] for line in lines} == ids  # type: ignore[attr-defined]
    assert len(cached.front.front.replays) == 1
    assert cached.front.reached == []  # never the app behind


async def test_an_update_is_what_the_next_read_answers(cached: Cached) -> None:
    session = await signed_in(cached)
    assert (await cached.read(session["token"])).json()["data"]["user"]["name"] == "Ada"
    assert (await cached.read(session["token"])).json()["data"]["user"]["name"] == "Ada"
    assert cached.flow_reads == 1
    assert (await cached.patch(session["token"], {"name": "Ada L."})).status_code == 200
    assert (await cached.read(session["token"])).json()["data"]["user"]["name"] == "Ada L."
    assert cached.flow_reads == 2


@pytest.mark.parametrize("change", ["logout", "password", "disable", "lost"])
async def test_a_session_ended_or_a_silent_channel_ends_the_replay_at_once(
    cached: Cached, change: str
) -> None:
    session = await signed_in(cached)
    token = session["token"]
    assert [(await cached.read(token)).status_code for _ in range(2)] == [200, 200]
    assert cached.flow_reads == 1
    if change == "logout":
        body = {"refresh_token": session["refresh_token"]}
        assert (await cached.front.client.post("/api/auth/logout", json=body)).status_code == 200
    elif change == "password":
        body = {"password": "a new horse battery staple", "current_password": PASSWORD}
        assert (await cached.patch(token, body)).status_code == 200
    elif change == "disable":
        ctx = cached.api.services.ctx
        await admin.disable(ctx, session["user"]["id"], operator="test")
    else:
        cached.cache.lost()  # the invalidation channel went down: fail closed
    answer = await cached.read(token)
    assert cached.flow_reads == 2, "the whole path again, not the recorded answer"
    if change == "lost":  # still signed in: read from the database, and not recorded
        assert answer.status_code == 200
        await cached.read(token)
        assert cached.flow_reads == 3
    else:
        assert answer.status_code == 401, answer.text


async def test_an_expired_token_is_refused_not_replayed(cached: Cached) -> None:
    session = await signed_in(cached)
    assert [(await cached.read(session["token"])).status_code for _ in range(2)] == [200, 200]
    cached.api.clock.advance(session["expires_in"] + 1)
    answer = await cached.read(session["token"])
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_token"


async def test_an_answer_is_given_only_to_the_header_it_was_made_for(cached: Cached) -> None:
    session = await signed_in(cached)
    other = await cached.api.logged_in()  # the same account, another session
    await cached.read(session["token"])
    await cached.read(other["token"])
    assert cached.flow_reads == 2
    await cached.read(session["token"], scheme="bearer")  # the same token, written otherwise
    assert cached.flow_reads == 3
    tampered = session["token"][:-2] + ("A" if session["token"][-2] != "A" else "B") + "x"
    assert (await cached.read(tampered)).status_code == 401
    assert cached.flow_reads == 4


async def test_the_cache_expiring_its_entry_ends_the_replay(cached: Cached) -> None:
    session = await signed_in(cached)
    await cached.read(session["token"])
    cached.tick.now += cached.cache.ttl_seconds + 1
    cached.cache.heard()  # the channel is alive; only the entry is too old
    await cached.read(session["token"])
    assert cached.flow_reads == 2


class TestRecording:
    """What is recorded: a marked answer, 200, one body, no cookie; the store is bounded."""

    async def record(
        self, replays: Replays, key: tuple[str, bytes], messages: list[dict[str, Any]], mark: bool
    ) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        scope: dict[str, Any] = {REPLAYABLE: (lambda: True)} if mark else {}

        async def send(message: Any) -> None:
            sent.append(message)

        recording = replays.recording(key, scope, send)
        for message in messages:
            await recording(message)
        return sent

    @staticmethod
    def answer(status: int = 200, *headers: tuple[bytes, bytes]) -> list[dict[str, Any]]:
        return [
            {"type": "http.response.start", "status": status, "headers": list(headers)},
            {"type": "http.response.body", "body": b"{}"},
        ]

    async def test_a_marked_answer_is_kept_without_its_request_id(self) -> None:
        replays, key = Replays(), ("/p", b"Bearer t")
        headers = ((b"content-type", b"application/json"), (b"x-request-id", b"r1"))
        sent = await self.record(replays, key, self.answer(200, *headers), mark=True)
        assert len(sent) == 2, "everything is passed on"
        replay = replays.find(key)
        assert replay is not None
        assert (replay.status, replay.headers, replay.body) == (
            200,
            ((b"content-type", b"application/json"),),
            b"{}",
        )

    @pytest.mark.parametrize(
        "case", ["unmarked", "not 200", "cookie", "body in parts"], ids=lambda c: c
    )
    async def test_anything_else_is_not_kept(self, case: str) -> None:
        replays, key = Replays(), ("/p", b"Bearer t")
        messages = self.answer(201 if case == "not 200" else 200)
        if case == "cookie":
            messages = self.answer(200, (b"Set-Cookie", b"a=b"))
        if case == "body in parts":
            messages.insert(1, {"type": "http.response.body", "body": b"{", "more_body": True})
        await self.record(replays, key, messages, mark=case != "unmarked")
        assert replays.find(key) is None
        assert len(replays) == 0

    async def test_the_store_is_bounded_in_entries_and_in_bytes(self) -> None:
        replays = Replays(max_entries=3)
        for n in range(5):
            await self.record(replays, ("/p", b"t%d" % n), self.answer(), mark=True)
        assert len(replays) == 3
        assert replays.find(("/p", b"t4")) is not None, "the newest is kept"
        small = Replays(max_bytes=100)
        for n in range(20):
            await self.record(small, ("/p", b"token-%02d" % n), self.answer(), mark=True)
        assert 0 < small.bytes <= 100
        assert small.bytes == len(small) * (len(b"token-00") + len(b"{}"))

    async def test_an_answer_that_stopped_holding_goes_without_being_asked_for(self) -> None:
        """Each recording looks at the oldest two: a session ended long ago (and the personal
        data in its answer) does not wait for its token to come back."""
        replays = Replays()
        holds = {b"old": [True]}
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        recording = replays.recording(("/p", b"old"), {REPLAYABLE: lambda: holds[b"old"][0]}, send)
        for message in self.answer():
            await recording(message)
        holds[b"old"][0] = False
        await self.record(replays, ("/p", b"new"), self.answer(), mark=True)
        assert len(replays) == 1
        assert replays.find(("/p", b"new")) is not None

    async def test_an_answer_not_holding_when_made_is_not_kept(self) -> None:
        replays = Replays()
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        recording = replays.recording(("/p", b"t"), {REPLAYABLE: lambda: False}, send)
        for message in self.answer():
            await recording(message)
        assert len(sent) == 2 and len(replays) == 0

    async def test_an_answer_that_stopped_holding_is_dropped(self) -> None:
        replays, key = Replays(), ("/p", b"Bearer t")
        holds = [True]
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        recording = replays.recording(key, {REPLAYABLE: lambda: holds[0]}, send)
        for message in self.answer():
            await recording(message)
        assert replays.find(key) is not None
        holds[0] = False
        assert replays.find(key) is None
        assert len(replays) == 0


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"Bearer abc.def.ghi", True),
        (b"bearer abc.def.ghi", False),  # valid, but not the one spelling a key may have
        (b"Bearer  abc.def.ghi", False),
        (b"Bearer\tabc.def.ghi", False),
        (b"Bearer abc.def.ghi ", False),
        (b"Bearer ", False),
        (b"Bearer " + b"a" * 2100, False),
        (b"Basic abc", False),
    ],
)
def test_a_key_is_only_the_plain_bearer_header(header: bytes, kept: bool) -> None:
    scope = {"path": PROFILE, "headers": [(b"host", b"t"), (b"authorization", header)]}
    assert (key_of(scope) == (PROFILE, header)) is kept
    assert kept or key_of(scope) is None
