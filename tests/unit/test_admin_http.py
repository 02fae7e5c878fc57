"""`/api/admin/users` and `/api/admin/audit` in-process on SQLite: behind the admin key (404
while it is unset, 401 with a wrong one), a disabled account refused at sign-in with the body a
wrong password gets and its refresh token refused, every action in the audit trail with the
request's client address, and the trail read a page at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gatehouse.admin.users_http import (
    AuditData,
    DeletedData,
    RevokedData,
    UserData,
    UserDetailData,
    UsersData,
)
from gatehouse.web.schemas import Envelope

from .api_client import EMAIL, PASSWORD, Api, open_api

KEY = "k" * 40
ADMIN = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def admin_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("GATEHOUSE_ADMIN_TOKEN", KEY)
    async with open_api(tmp_path, monkeypatch) as opened:
        yield opened


async def test_the_admin_routes_are_off_without_a_key_and_refuse_a_wrong_one(
    api: Api, admin_api: Api
) -> None:
    for path in ("/api/admin/users", "/api/admin/audit", "/api/admin/users/x"):
        assert (await api.client.get(path, headers=ADMIN)).status_code == 404
        wrong = await admin_api.client.get(path, headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401


ANSWERS: dict[str, type[BaseModel]] = {
    "/api/admin/users": Envelope[UsersData],
    "/api/admin/audit": Envelope[AuditData],
    "revoke": Envelope[RevokedData],
    "able": Envelope[UserData],
    "user": Envelope[UserDetailData],
}


def checked(path: str, body: Any) -> dict[str, Any]:
    """The answer's `data`, once it is found to be what OpenAPI says (models forbid extras)."""
    model = ANSWERS.get(path) or next(
        (m for key, m in ANSWERS.items() if path.endswith(key)), ANSWERS["user"]
    )
    model.model_validate(body)
    data: dict[str, Any] = body["data"]
    return data


async def get(api: Api, path: str, **params: Any) -> dict[str, Any]:
    reply = await api.client.get(path, params=params, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return checked(path, reply.json())


async def post(api: Api, path: str) -> dict[str, Any]:
    reply = await api.client.post(path, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return checked(path, reply.json())


async def test_disable_enable_revoke_delete_over_http_each_in_the_trail(admin_api: Api) -> None:
    api = admin_api
    user = await api.signed_up()
    session = await api.logged_in()
    found = await get(api, "/api/admin/users", query="ADA@")
    assert [u["id"] for u in found["users"]] == [user["id"]] and found["next_cursor"] is None
    shown = (await get(api, f"/api/admin/users/{user['id']}"))["user"]
    assert len(shown["sessions"]) == 1 and shown["second_factors"]["totp"] is False

    disabled = await post(api, f"/api/admin/users/{user['id']}/disable")
    assert disabled["user"]["disabled"] is True
    refreshed = await api.post("/api/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert refreshed.status_code == 401
    profile = await api.client.get(
        "/api/auth/profile", headers={"Authorization": f"Bearer {session['token']}"}
    )
    assert profile.status_code == 401
    right = await api.post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
    wrong = await api.post("/api/auth/login", {"email": EMAIL, "password": "not the password"})
    assert right.status_code == wrong.status_code == 401
    assert right.json() == wrong.json()

    await post(api, f"/api/admin/users/{user['id']}/enable")
    again = await api.logged_in()
    revoked = await post(api, f"/api/admin/users/{user['id']}/sessions/revoke")
    assert revoked == {"user_id": user["id"], "revoked": 1}
    assert (
        await api.post("/api/auth/refresh", {"refresh_token": again["refresh_token"]})
    ).status_code == 401
    deleted = await api.client.delete(f"/api/admin/users/{user['id']}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["data"] == {"user_id": user["id"]}
    Envelope[DeletedData].model_validate(deleted.json())
    gone = await api.client.get(f"/api/admin/users/{user['id']}", headers=ADMIN)
    assert gone.status_code == 404

    trail = (await get(api, "/api/admin/audit", user_id=user["id"], limit=200))["records"]
    by_admin = [(r["action"], r["actor_id"]) for r in trail if r["actor"] == "admin"]
    assert by_admin == [
        ("user.delete", "admin-api"),
        ("user.sessions.revoke", "admin-api"),
        ("user.enable", "admin-api"),
        ("user.disable", "admin-api"),
    ]
    # Every record of a request has its client address (the hot routes' too: login, refresh).
    assert {r["client_address"] for r in trail if r["action"] != "account.create"} == {"127.0.0.1"}
    refusals = [r["detail"] for r in trail if r["action"] == "login" and r["outcome"] == "failure"]
    assert refusals == ["disabled", "disabled"]  # the right password and a wrong one, alike
    logins = await get(api, "/api/admin/audit", type="login*", user_id=user["id"])
    assert {r["action"] for r in logins["records"]} == {"login"}


async def test_the_trail_pages_with_a_cursor_and_filters_by_time(admin_api: Api) -> None:
    api = admin_api
    user = await api.signed_up()
    for _ in range(4):
        await api.logged_in()
        api.clock.advance(60)
    every = (await get(api, "/api/admin/audit", limit=200))["records"]
    assert [r["id"] for r in every] == sorted((r["id"] for r in every), reverse=True)
    # No relay runs in this process: written, not linked yet; the chainer links them.
    assert {r["seq"] for r in every} == {None}
    assert await api.services.audit_store().chain(100) == len(every)
    every = (await get(api, "/api/admin/audit", limit=200))["records"]
    assert [r["seq"] for r in every] == list(range(len(every), 0, -1))
    seen: list[int] = []
    cursor = None
    while True:
        page = await get(api, "/api/admin/audit", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [r["id"] for r in page["records"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in every]
    since = every[1]["at"]
    recent = await get(api, "/api/admin/audit", since=since, user_id=user["id"])
    assert [r["id"] for r in recent["records"]] == [every[0]["id"], every[1]["id"]]
    bad = await api.client.get("/api/admin/audit", params={"since": "yesterday"}, headers=ADMIN)
    assert bad.status_code == 422
    bad = await api.client.get("/api/admin/audit", params={"cursor": "!!"}, headers=ADMIN)
    assert bad.status_code == 422
