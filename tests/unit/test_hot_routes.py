"""The hot routes (entrypoints/api/hot.py) answer exactly as FastAPI's routes do: each request
is sent twice, through the hot layer and with it emptied, and the answers compared; and the
well-formed ones really are answered before FastAPI's router."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gatehouse.web import hot

from .api_client import EMAIL, PASSWORD, Api

HEADERS = (
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "content-security-policy",
    "x-content-type-options",
    "strict-transport-security",
)


def answer(response: httpx.Response) -> tuple[int, Any, dict[str, str | None]]:
    return (
        response.status_code,
        response.json(),
        {name: response.headers.get(name) for name in HEADERS},
    )


async def both_ways(
    api: Api, monkeypatch: pytest.MonkeyPatch, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    hot_answer = await api.client.request(method, path, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(hot, "ROUTES", {})
        router_answer = await api.client.request(method, path, **kwargs)
    return hot_answer, router_answer


JSON_TYPE = {"content-type": "application/json"}
REFRESH_CASES: list[dict[str, Any]] = [
    {"json": {"refresh_token": "not-a-token"}},
    {"json": {"refresh_token": ""}},
    {"json": {"refresh_token": "x" * 513}},
    {"json": {"refresh_token": 5}},
    {"json": {"refresh_token": "t", "extra": 1}},
    {"json": {}},
    {"json": ["refresh_token"]},
    {"content": b"{not json", "headers": JSON_TYPE},
    {"content": b"", "headers": JSON_TYPE},
    {"content": b'{"refresh_token": "t"}', "headers": {"content-type": "text/plain"}},
    {"content": b'{"refresh_token": "t"}'},
]
VERIFY_CASES: list[dict[str, Any]] = [
    {"json": {"email": "nobody@example.com", "otp": "123456"}},
    {"json": {"email": "not-an-email", "otp": "123456"}},
    {"json": {"email": "nobody@example.com"}},
    {"json": {"email": "nobody@example.com", "otp": "1" * 17}},
    {"json": {"email": "nobody@example.com", "otp": 123456}},
    {"content": b"null", "headers": JSON_TYPE},
]
PROFILE_HEADERS: list[dict[str, str]] = [
    {},
    {"authorization": "Bearer "},
    {"authorization": "Basic abc"},
    {"authorization": "Bearer not.a.token"},
]


@pytest.mark.parametrize(
    ("path", "case"),
    [("/api/auth/refresh", case) for case in REFRESH_CASES]
    + [("/api/auth/verify-otp", case) for case in VERIFY_CASES],
)
async def test_refusals_answer_as_the_router_does(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str, case: dict[str, Any]
) -> None:
    hot_answer, router_answer = await both_ways(api, monkeypatch, "POST", path, **case)
    assert hot_answer.status_code >= 400
    assert answer(hot_answer) == answer(router_answer)


@pytest.mark.parametrize("headers", PROFILE_HEADERS)
async def test_profile_refusals_answer_as_the_router_does(
    api: Api, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "GET", "/api/auth/profile", headers=headers
    )
    assert hot_answer.status_code == 401
    assert answer(hot_answer) == answer(router_answer)


async def test_a_signed_in_profile_reads_the_same_both_ways(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.signed_up()
    session = await api.logged_in()
    headers = {"authorization": f"Bearer {session['token']}"}
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "GET", "/api/auth/profile", headers=headers
    )
    assert hot_answer.status_code == 200
    assert hot_answer.json()["data"]["user"]["email"] == EMAIL
    assert answer(hot_answer) == answer(router_answer)


async def test_well_formed_requests_never_reach_the_router(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign-up verification, refresh and profile read succeed with FastAPI's router refusing
    every request; a malformed one still reaches it (and gets its answer)."""
    await api.post("/api/auth/register", {"name": "Ada", "email": EMAIL, "password": PASSWORD})
    [code] = await api.sent_codes(EMAIL)
    router_calls: list[str] = []
    app: Any = api.client._transport.app  # type: ignore[attr-defined]
    stack = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = stack
    layer = stack
    while not isinstance(layer, hot.HotRoutes):
        layer = layer.app
    inner = layer.app

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        router_calls.append(scope["path"])
        await inner(scope, receive, send)

    monkeypatch.setattr(layer, "app", counting)

    verified = await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code})
    assert verified.status_code == 201, verified.text
    session = await api.logged_in()
    assert router_calls == ["/api/auth/login"]
    refreshed = await api.post("/api/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["data"]["token"]
    profile = await api.client.get(
        "/api/auth/profile", headers={"authorization": f"Bearer {token}"}
    )
    assert profile.status_code == 200, profile.text
    assert router_calls == ["/api/auth/login"]

    malformed = await api.post("/api/auth/refresh", {"refresh_token": ""})
    assert malformed.status_code == 422
    assert router_calls == ["/api/auth/login", "/api/auth/refresh"]
