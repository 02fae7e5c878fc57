"""The hot routes answered in front of the app (web/front.py) against the app behind it: every
answer the same (status, body, every header but the request id, which both give), well-formed
requests never entering the app, and everything else (malformed bodies, a body with no length
or over the limit, an Origin when CORS is on, other routes) answered by the app itself."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gatehouse.web.front import HotFront
from gatehouse.web.middleware import SECURITY_HEADERS

from .api_client import EMAIL, PASSWORD, Api
from .test_hot_routes import PROFILE_HEADERS, REFRESH_CASES, VERIFY_CASES, app_of

SHOWN = {name.decode() for name, _ in SECURITY_HEADERS} | {
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "content-length",
}


class Front:
    """A client of `HotFront` over the api's app, counting what reaches the app."""

    def __init__(self, app: FastAPI, max_body_bytes: int = 65536):
        self.reached: list[str] = []

        async def behind(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.reached.append(scope["path"])
            await app(scope, receive, send)

        self.front = HotFront(behind, fastapi=app, max_body_bytes=max_body_bytes)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.front), base_url="http://t"
        )


@pytest.fixture
async def front(api: Api) -> Any:
    made = Front(app_of(api))
    async with made.client:
        yield made


def seen(response: httpx.Response) -> tuple[int, bytes, dict[str, str | None]]:
    assert response.headers.get("x-request-id"), "every answer has its request id"
    return (
        response.status_code,
        response.content,
        {name: response.headers.get(name) for name in sorted(SHOWN)},
    )


async def both(
    api: Api, front: Front, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    return (
        await front.client.request(method, path, **kwargs),
        await api.client.request(method, path, **kwargs),
    )


@pytest.mark.parametrize(
    ("path", "case"),
    [("/api/auth/refresh", case) for case in REFRESH_CASES]
    + [("/api/auth/verify-otp", case) for case in VERIFY_CASES],
)
async def test_refusals_answer_as_the_app_does(
    api: Api, front: Front, path: str, case: dict[str, Any]
) -> None:
    ahead, behind = await both(api, front, "POST", path, **case)
    assert ahead.status_code >= 400
    assert seen(ahead) == seen(behind)


@pytest.mark.parametrize("headers", PROFILE_HEADERS)
async def test_profile_refusals_answer_as_the_app_does(
    api: Api, front: Front, headers: dict[str, str]
) -> None:
    ahead, behind = await both(api, front, "GET", "/api/auth/profile", headers=headers)
    assert ahead.status_code == 401
    assert seen(ahead) == seen(behind)
    assert front.reached == []  # refused in front: a well-formed request, a bad token


async def test_the_signed_in_routes_answer_in_front_as_behind(
    api: Api, front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    await api.post("/api/auth/register", {"name": "Ada", "email": EMAIL, "password": PASSWORD})
    [code] = await api.sent_codes(EMAIL)
    verified = await front.client.post("/api/auth/verify-otp", json={"email": EMAIL, "otp": code})
    assert verified.status_code == 201, verified.text
    session = await api.logged_in()
    body = {"refresh_token": session["refresh_token"]}
    with caplog.at_level(logging.INFO, logger="gatehouse.access"):
        refreshed = await front.client.post("/api/auth/refresh", json=body)
    assert refreshed.status_code == 200, refreshed.text
    lines = [r.getMessage() for r in caplog.records if r.name == "gatehouse.access"]
    assert len(lines) == 1 and "POST /api/auth/refresh 200" in lines[0], lines
    bearer = {"authorization": f"Bearer {refreshed.json()['data']['token']}"}
    ahead, behind = await both(api, front, "GET", "/api/auth/profile", headers=bearer)
    assert ahead.status_code == 200
    assert seen(ahead) == seen(behind)
    assert front.reached == []  # all of it answered in front
    malformed = await front.client.post("/api/auth/refresh", json={"refresh_token": ""})
    assert malformed.status_code == 422
    assert front.reached == ["/api/auth/refresh"]  # the app's answer, on the replayed body


async def chunks() -> Any:
    yield b'{"refresh_token": "t"}'  # sent without a Content-Length


async def test_what_is_not_plainly_hot_goes_behind(api: Api) -> None:
    small = Front(app_of(api), max_body_bytes=8)  # the front's bound: the app keeps its own
    body = {"refresh_token": "t" * 40}
    async with small.client:
        over = await small.client.post("/api/auth/refresh", json=body)
        chunked = await small.client.post("/api/auth/refresh", content=chunks())
        other = await small.client.get("/health/live")
    assert small.reached == ["/api/auth/refresh", "/api/auth/refresh", "/health/live"]
    assert seen(over) == seen(await api.client.post("/api/auth/refresh", json=body))
    assert chunked.status_code == 415 and other.status_code == 200  # the app's answers


async def test_an_origin_goes_behind_when_cors_is_on(api: Api, front: Front) -> None:
    app_of(api).state.services.settings.cors_origins = ["https://app.example.com"]
    front.front._built = None  # read the settings again, as a new process would
    await front.client.get("/api/auth/profile", headers={"origin": "https://app.example.com"})
    await front.client.get("/api/auth/profile")
    assert front.reached == ["/api/auth/profile"]
