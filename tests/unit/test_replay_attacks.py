"""Replayed profile answers (web/replays.py) attacked: every attempt to be given an answer one
should not have (another user's, after any change that ends a session or alters its user, on
this node or another, after expiry, with a silent channel), to have a recorded answer given to
another route, method or spelling of the request, to lose a security header or reuse a request
id, and to make the log, metrics and trace record a replay otherwise than the first answer.

Two tests failed on 076c9fa, the first version of replays, each a weakness found (both mended
since: keys only of the plain `Bearer <token>` header up to 2 KiB, the store bounded in bytes too,
and a replay whose start went out counted with its status):
- `test_a_padded_authorization_header_is_not_kept_whole`: the store is bounded by its count of
  entries only, and its key is the Authorization header as sent. `bearer_token` strips the
  whitespace between scheme and token, and uvicorn's httptools parser takes a header of any
  length, so one signed-in client can make each api worker keep `max_entries` (10,000) copies
  of a header of any size it chooses: memory held after the requests end.
- `test_a_send_that_fails_is_logged_and_counted_as_the_first_answer_was`: when sending fails
  after the status line went out, the normal path logs and counts the status it sent (200);
  `AccessLog.answer` logs and counts 500, and fails the span."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect

from gatehouse.admin import users as admin
from gatehouse.selfservice.profile import flow as profile_flow
from gatehouse.selfservice.sessions.cache import SignedInCache
from gatehouse.web.middleware import NO_STORE, SECURITY_HEADERS

from .api_client import PASSWORD, Api
from .test_hot_front import Front, seen
from .test_hot_routes import app_of
from .test_replays import PROFILE, Cached, cached

__all__ = ["cached"]  # the fixture of test_replays.py, imported for these tests
BOB = "bob@example.com"


async def signed_in(cached: Cached, email: str = "ada@example.com") -> dict[str, Any]:
    await cached.api.signed_up(email)
    return await cached.api.logged_in(email)


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {session['token']}"}


def kept(cached: Cached) -> int:
    return len(cached.front.front.replays)


async def recorded(cached: Cached, session: dict[str, Any]) -> httpx.Response:
    """Read twice: the first is recorded, the second replayed."""
    first = await cached.read(session["token"])
    again = await cached.read(session["token"])
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    return first


# -- another user's answer ------------------------------------------------------------------


async def test_each_token_is_only_ever_given_its_own_users_answer(cached: Cached) -> None:
    ada = await signed_in(cached)
    bob = await signed_in(cached, BOB)
    for _ in range(3):
        assert (await cached.read(ada["token"])).json()["data"]["user"]["id"] == ada["user"]["id"]
        assert (await cached.read(bob["token"])).json()["data"]["user"]["id"] == bob["user"]["id"]
    assert cached.flow_reads == 2 and kept(cached) == 2


@pytest.mark.parametrize("order", ["ada first", "bob first"])
async def test_duplicate_authorization_headers_answer_as_the_app_does(
    cached: Cached, order: str
) -> None:
    """The key and `bearer_token` both take the first header: a second one never selects
    another recorded answer, and the answer is the app's for the same headers."""
    ada = await signed_in(cached)
    bob = await signed_in(cached, BOB)
    await recorded(cached, ada)
    await recorded(cached, bob)
    pair = [bob, ada] if order == "bob first" else [ada, bob]
    headers = [("authorization", f"Bearer {s['token']}") for s in pair]
    for _ in range(2):
        ahead = await cached.front.client.get(PROFILE, headers=headers)
        behind = await cached.api.client.get(PROFILE, headers=headers)
        assert ahead.json()["data"]["user"]["id"] == pair[0]["user"]["id"]
        assert seen(ahead) == seen(behind)
    assert cached.front.reached == []


# -- every change ends it -------------------------------------------------------------------


async def change(cached: Cached, how: str, ada: dict[str, Any]) -> None:
    api, ctx, token = cached.api, cached.api.services.ctx, ada["token"]
    user_id = ada["user"]["id"]
    if how == "self delete":
        body = {"password": PASSWORD}
        headers = bearer(ada)
        answer = await cached.front.client.request("DELETE", PROFILE, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
    elif how == "admin delete":
        await admin.delete(ctx, user_id, operator="test")
    elif how == "admin revoke sessions":
        await admin.revoke_sessions(ctx, user_id, operator="test")
    elif how == "revoked from another session":
        other = await api.logged_in()
        reads = cached.flow_reads
        assert (await cached.read(token)).status_code == 200
        assert cached.flow_reads == reads, "another sign-in alone ends nothing"
        sid = ctx.tokens.verify(token, ctx.clock()).sid
        headers = bearer(other)
        answer = await cached.front.client.delete(f"/api/auth/sessions/{sid}", headers=headers)
        assert answer.status_code == 200, answer.text
    elif how == "logout everywhere":
        everywhere = {"refresh_token": ada["refresh_token"], "everywhere": True}
        assert (await api.post("/api/auth/logout", everywhere)).status_code == 200
    elif how == "refresh token reused":
        body = {"refresh_token": ada["refresh_token"]}
        assert (await api.post("/api/auth/refresh", body)).status_code == 200
        assert (await api.post("/api/auth/refresh", body)).status_code == 401
    elif how == "disabled then enabled":
        await admin.disable(ctx, user_id, operator="test")
        await admin.enable(ctx, user_id, operator="test")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "self delete",
        "admin delete",
        "admin revoke sessions",
        "revoked from another session",
        "logout everywhere",
        "refresh token reused",
        "disabled then enabled",
    ],
)
async def test_a_session_ended_any_way_is_refused_not_replayed(cached: Cached, how: str) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    assert cached.flow_reads == 1
    await change(cached, how, ada)
    answer = await cached.read(ada["token"])
    assert answer.status_code == 401, answer.text
    assert cached.flow_reads == 2
    assert kept(cached) == 0


async def test_a_change_made_on_another_node_ends_the_replay_here(cached: Cached) -> None:
    """Another api process (its own cache on the same channel) updates the profile."""
    ada = await signed_in(cached)
    await recorded(cached, ada)
    elsewhere = SignedInCache(clock=cached.tick)
    elsewhere.heard()
    cached.channel.caches.append(elsewhere)
    there = replace(cached.api.services.ctx, signed_in=elsewhere)
    await profile_flow.update(there, token=ada["token"], name="Ada Elsewhere")
    answer = await cached.read(ada["token"])
    assert answer.json()["data"]["user"]["name"] == "Ada Elsewhere"
    assert cached.flow_reads == 2


async def test_an_update_refused_for_want_of_the_channel_changes_nothing(cached: Cached) -> None:
    """The first announcement fails: nothing is written, so the recorded answer is still true."""
    ada = await signed_in(cached)
    await recorded(cached, ada)
    cached.channel.failing.add(False)
    refused = await cached.patch(ada["token"], {"name": "Never"})
    assert refused.status_code == 503, refused.text
    cached.channel.failing.clear()
    ctx = cached.api.services.ctx
    async with ctx.reader() as uow:
        stored = await uow.users.get(ada["user"]["id"])
    assert stored is not None and stored.name == "Ada"
    assert (await cached.read(ada["token"])).json()["data"]["user"]["name"] == "Ada"


async def test_an_update_whose_second_announcement_is_lost_is_not_replayed(
    cached: Cached,
) -> None:
    """The hold went out, the release did not: the new profile is read, and not kept."""
    ada = await signed_in(cached)
    await recorded(cached, ada)
    cached.channel.failing.add(True)
    assert (await cached.patch(ada["token"], {"name": "Ada L."})).status_code == 200
    for _ in range(2):
        assert (await cached.read(ada["token"])).json()["data"]["user"]["name"] == "Ada L."
    assert cached.flow_reads == 3
    # Each of those reads was recorded (its `Held` came back though the cache refused the
    # user), but as an answer that never holds: found, it is dropped.
    key = (PROFILE, f"Bearer {ada['token']}".encode())
    assert cached.front.front.replays.find(key) is None and kept(cached) == 0


async def test_a_silent_channel_ends_the_replay_without_any_announcement(cached: Cached) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    cached.tick.now += cached.cache.stale_after + 0.01  # no heartbeat: nothing was told
    for _ in range(2):
        assert (await cached.read(ada["token"])).status_code == 200
    assert cached.flow_reads == 3, "read from the database each time, never replayed"
    cached.cache.heard()  # back, and empty: a new answer is recorded from the database
    await recorded(cached, ada)
    assert cached.flow_reads == 4


async def test_a_token_is_replayed_until_its_last_second_and_never_at_its_expiry(
    cached: Cached,
) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    cached.api.clock.advance(ada["expires_in"] - 1)
    assert (await cached.read(ada["token"])).status_code == 200
    assert cached.flow_reads == 1
    cached.api.clock.advance(1)  # exactly `exp`
    answer = await cached.read(ada["token"])
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_token"
    assert kept(cached) == 0


async def test_without_a_signed_in_cache_nothing_is_recorded(api: Api) -> None:
    await api.signed_up()
    session = await api.logged_in()
    front = Front(app_of(api))
    async with front.client:
        for _ in range(2):
            answer = await front.client.get(PROFILE, headers=bearer(session))
            assert answer.status_code == 200
    assert len(front.front.replays) == 0


# -- other routes, methods and spellings -----------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
async def test_no_other_method_on_the_path_is_given_the_recorded_answer(
    cached: Cached, method: str
) -> None:
    ada = await signed_in(cached)
    first = await recorded(cached, ada)
    answer = await cached.front.client.request(method, PROFILE, headers=bearer(ada))
    assert cached.front.reached == [PROFILE], "the app's to answer"
    assert answer.status_code != 200 or answer.content != first.content
    assert cached.flow_reads == 1


@pytest.mark.parametrize(
    ("path", "replayed"),
    [
        (PROFILE + "?user=someone-else", True),  # the route reads no query: the same answer
        (PROFILE + "/", False),
        ("/api/auth/profile%2F", False),
        ("/api/auth//profile", False),
        ("/API/auth/profile", False),
    ],
)
async def test_other_spellings_of_the_path(cached: Cached, path: str, replayed: bool) -> None:
    ada = await signed_in(cached)
    first = await recorded(cached, ada)
    answer = await cached.front.client.get(path, headers=bearer(ada))
    if replayed:
        assert seen(answer) == seen(first) and cached.flow_reads == 1
        assert cached.front.reached == []
    else:
        assert answer.content != first.content
        assert cached.front.reached != []


@pytest.mark.parametrize(
    "header",
    [
        "Basic {t}",
        "Bearer {t} {t}",
        "Bearer {t}x",
        "Bearer",
        "Bearer\t",
        "Token {t}",
    ],
)
async def test_odd_authorization_headers_are_refused_and_never_kept(
    cached: Cached, header: str
) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    value = header.format(t=ada["token"])
    for _ in range(2):
        answer = await cached.front.client.get(PROFILE, headers={"authorization": value})
        assert answer.status_code == 401
    assert kept(cached) == 1


async def test_non_ascii_and_very_long_garbage_headers_are_refused_and_never_kept(
    cached: Cached,
) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    for value in (b"Bearer \xff\xfe\xfd", b"Bearer " + b"a" * 200_000):
        for _ in range(2):
            answer = await cached.front.client.get(PROFILE, headers=[(b"authorization", value)])
            assert answer.status_code == 401
    assert kept(cached) == 1


async def test_no_authorization_header_is_never_given_a_recorded_answer(cached: Cached) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    answer = await cached.front.client.get(PROFILE)
    assert answer.status_code == 401
    proxy = {"proxy-authorization": f"Bearer {ada['token']}"}
    assert (await cached.front.client.get(PROFILE, headers=proxy)).status_code == 401


async def test_an_origin_is_never_replayed_when_cors_is_on(cached: Cached) -> None:
    ada = await signed_in(cached)
    await recorded(cached, ada)
    cached.api.services.settings.cors_origins = ["https://app.example.com"]
    cached.front.front._built = None  # read the settings again, as a new process would
    headers = {**bearer(ada), "origin": "https://app.example.com"}
    assert (await cached.front.client.get(PROFILE, headers=headers)).status_code == 200
    assert cached.front.reached == [PROFILE]
    assert cached.flow_reads == 2
    assert (await cached.read(ada["token"])).status_code == 200  # no Origin: replayed
    assert cached.flow_reads == 2


# -- headers --------------------------------------------------------------------------------


async def test_a_replay_has_every_security_header_once_and_its_own_request_id(
    cached: Cached,
) -> None:
    ada = await signed_in(cached)
    first = await cached.read(ada["token"])
    sent = {**bearer(ada), "x-request-id": "attacker-chosen"}  # no trusted proxy here
    answers = [await cached.front.client.get(PROFILE, headers=sent) for _ in range(3)]
    assert cached.flow_reads == 1
    ids = set()
    for answer in [first, *answers]:
        names = [name.lower() for name, _ in answer.headers.raw]
        for name, value in [*SECURITY_HEADERS, NO_STORE]:
            assert names.count(name) == 1, name
            assert answer.headers[name.decode()] == value.decode()
        assert names.count(b"x-request-id") == 1
        assert names.count(b"set-cookie") == 0
        ids.add(answer.headers["x-request-id"])
    assert len(ids) == 4 and "attacker-chosen" not in ids


async def test_a_trusted_proxys_request_id_is_each_requests_own(cached: Cached) -> None:
    cached.api.services.settings.trusted_proxies = ["127.0.0.1/32"]  # httpx's ASGI client
    ada = await signed_in(cached)
    ids = []
    for n in range(3):
        headers = {**bearer(ada), "x-request-id": f"proxy-{n}"}
        ids.append((await cached.front.client.get(PROFILE, headers=headers)).headers)
    assert cached.flow_reads == 1
    assert [h["x-request-id"] for h in ids] == ["proxy-0", "proxy-1", "proxy-2"]
    plain = (await cached.read(ada["token"])).headers["x-request-id"]
    assert plain not in ("proxy-0", "proxy-1", "proxy-2")


# -- what is logged, counted and traced ------------------------------------------------------


class Counted:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int, bool]] = []

    def http_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        self.requests.append((method, route, status, seconds is not None))


async def test_a_replay_is_logged_and_counted_as_the_first_answer(
    cached: Cached, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await signed_in(cached)
    await cached.read(ada["token"])  # builds the front's chain
    counted = Counted()
    cached.front.front._built[1]._metrics = counted  # type: ignore[index]
    cached.front.front.replays = type(cached.front.front.replays)()  # record anew, counted
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        caplog.clear()  # only these two: the suite may have logged the sign-up at INFO before
        first, again = [await cached.read(ada["token"]) for _ in range(2)]
    assert cached.flow_reads == 2  # the first of these ran the flow, the second was replayed
    assert counted.requests == [("GET", PROFILE, 200, True)] * 2
    lines = [r.access for r in caplog.records if hasattr(r, "access")]  # type: ignore[attr-defined]
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [("GET", PROFILE, 200)] * 2
    assert [x["request_id"] for x in lines] == [
        first.headers["x-request-id"],
        again.headers["x-request-id"],
    ]


def scope_of(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PROFILE,
        "raw_path": PROFILE.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 123),
        "server": ("t", 80),
    }


async def test_a_send_that_fails_is_logged_and_counted_as_the_first_answer_was(
    cached: Cached, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed on 076c9fa. The connection breaks after the status line went out (a server whose
    send raises, or a cancellation): the normal path logs, counts and traces the 200 it sent;
    the replay (`AccessLog._send_made`) logs and counts 500 and marks the span failed."""
    ada = await signed_in(cached)
    await cached.read(ada["token"])  # builds the chain
    counted = Counted()
    cached.front.front._built[1]._metrics = counted  # type: ignore[index]
    cached.front.front.replays = type(cached.front.front.replays)()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def broken(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    statuses = []
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        caplog.clear()  # only these two: the suite may have logged the sign-up at INFO before
        for _ in range(2):
            # The server's to handle: Starlette's ClientDisconnect first, the OSError replayed.
            with pytest.raises((ClientDisconnect, OSError)):
                await cached.front.front(scope_of(ada["token"]), receive, broken)
            statuses.append(counted.requests[-1][2])
    assert cached.flow_reads == 2, "the second was replayed"
    lines = [r.access["status"] for r in caplog.records if hasattr(r, "access")]  # type: ignore[attr-defined]
    assert statuses == [200, 200], f"first answer counted {statuses[0]}, its replay {statuses[1]}"
    assert lines == [200, 200]


# -- memory --------------------------------------------------------------------------------


async def test_the_store_stays_bounded_in_entries_under_many_tokens(cached: Cached) -> None:
    await cached.api.signed_up()
    cached.front.front.replays.max_entries = 5
    sessions = [await cached.api.logged_in() for _ in range(8)]
    for session in sessions:
        await cached.read(session["token"])
    assert kept(cached) == 5


async def test_a_padded_authorization_header_is_not_kept_whole(cached: Cached) -> None:
    """Failed on 076c9fa. `bearer_token` strips the whitespace between the scheme and the token,
    so `Bearer<N spaces><token>` is the same valid token under a new key for every N (and every
    mix of spaces and tabs, every case of "Bearer"), and uvicorn's httptools parser bounds no
    header's length (a 4 MiB header parses). The store bounds entries (10,000), not bytes: one
    signed-in client makes each api worker keep 10,000 headers of a size it picks (here 3 of
    256 KiB: 768 KiB kept for three profile reads; at 1 MiB each, 10 GiB a worker)."""
    ada = await signed_in(cached)
    padding = 256 * 1024
    for n in range(3):
        value = "Bearer" + " " * (padding + n) + ada["token"]
        answer = await cached.front.client.get(PROFILE, headers={"authorization": value})
        assert answer.status_code == 200
    replays = cached.front.front.replays
    held = sum(len(key[1]) + len(entry.body) for key, entry in replays._entries.items())
    assert held <= 16 * 1024 * max(len(replays), 1), (
        f"{len(replays)} answers to one token keep {held} bytes"
    )
