"""Sessions and recent authentication over HTTP, in-process on SQLite: list and end sessions,
tokens of ended sessions (or of none) refused at once, step-up 403 then reauth."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import jwt
from sqlalchemy import event

from gatehouse.security.ratelimit import LimitsRateLimiter

from .api_client import EMAIL, PASSWORD, Api
from .test_api_http import assert_error, assert_success

PHONE = "+14155550123"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(api: Api, email: str = EMAIL, agent: str = "Firefox/140") -> dict[str, Any]:
    response = await api.client.post(
        "/api/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"user-agent": agent},
    )
    data: dict[str, Any] = assert_success(response, 200)
    return data


async def profile(api: Api, token: str) -> httpx.Response:
    return await api.client.get("/api/auth/profile", headers=bearer(token))


async def test_sessions_are_listed_newest_first_with_the_current_one(api: Api) -> None:
    await api.signed_up()
    first = await login(api, agent="Old/1")
    api.clock.advance(60)
    second = await login(api, agent="New/2")
    response = await api.client.get("/api/auth/sessions", headers=bearer(first["token"]))
    sessions = assert_success(response, 200)["sessions"]
    assert [(s["user_agent"], s["current"]) for s in sessions] == [
        ("New/2", False),
        ("Old/1", True),
    ]
    assert (
        sessions[0]["id"] == jwt.decode(second["token"], options={"verify_signature": False})["sid"]
    )
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "user_agent",
        "amr",
        "aal",
        "current",
    }
    assert (sessions[0]["amr"], sessions[0]["aal"]) == (["pwd"], 1)
    assert_error(await api.client.get("/api/auth/sessions"), 401)


async def test_an_ended_session_is_refused_at_once_and_others_are_not_found(api: Api) -> None:
    await api.signed_up()
    await api.signed_up("bob@example.com")
    mine, lost = await login(api), await login(api)
    bobs = await login(api, "bob@example.com")
    lost_sid = jwt.decode(lost["token"], options={"verify_signature": False})["sid"]
    bobs_sid = jwt.decode(bobs["token"], options={"verify_signature": False})["sid"]

    unknown = await api.client.delete(
        "/api/auth/sessions/no-such-session", headers=bearer(mine["token"])
    )
    theirs = await api.client.delete(
        f"/api/auth/sessions/{bobs_sid}", headers=bearer(mine["token"])
    )
    assert assert_error(unknown, 404) == assert_error(theirs, 404)
    assert_success(await profile(api, bobs["token"]), 200)

    assert_success(await profile(api, lost["token"]), 200)
    ended = await api.client.delete(f"/api/auth/sessions/{lost_sid}", headers=bearer(mine["token"]))
    assert assert_success(ended, 200) == {}
    assert assert_error(await profile(api, lost["token"]), 401)["code"] == "invalid_token"
    refresh = await api.post("/api/auth/refresh", {"refresh_token": lost["refresh_token"]})
    assert_error(refresh, 401)
    assert_success(await profile(api, mine["token"]), 200)
    again = await api.client.delete(f"/api/auth/sessions/{lost_sid}", headers=bearer(mine["token"]))
    assert_error(again, 404)


async def test_a_token_of_no_session_is_refused_though_well_signed(api: Api) -> None:
    user = await api.signed_up()
    token = (await login(api))["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    key = api.services.ctx.secrets.signing_keys[-1]
    for sid in (None, ""):
        forged = {k: v for k, v in claims.items() if k != "sid"}
        if sid is not None:
            forged["sid"] = sid
        assert forged["sub"] == user["id"]
        made = jwt.encode(
            forged, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": "at+jwt"}
        )
        assert_error(await profile(api, made), 401)


async def test_a_phone_change_needs_a_recent_sign_in_then_reauth_allows_it(api: Api) -> None:
    await api.signed_up()
    session = await login(api)
    token = session["token"]
    change = {"phone": PHONE}
    api.clock.advance(api.services.settings.step_up_seconds + 1)
    refused = await api.client.patch("/api/auth/profile", json=change, headers=bearer(token))
    assert assert_error(refused, 403)["code"] == "reauth_required"

    wrong = await api.client.post(
        "/api/auth/reauth", json={"password": "not it"}, headers=bearer(token)
    )
    assert assert_error(wrong, 401)["code"] == "invalid_credentials"
    assert_error(await api.post("/api/auth/reauth", {"password": PASSWORD}), 401)  # no bearer
    proved = await api.client.post(
        "/api/auth/reauth", json={"password": PASSWORD}, headers=bearer(token)
    )
    data = assert_success(proved, 200)
    assert (data["token_type"], data["expires_in"]) == ("Bearer", 900)
    assert set(data) == {"token", "token_type", "expires_in"}
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert claims["sid"] == jwt.decode(token, options={"verify_signature": False})["sid"]
    assert claims["auth_time"] == int(api.clock.now.timestamp())

    changed = await api.client.patch(
        "/api/auth/profile", json=change, headers=bearer(data["token"])
    )
    assert assert_success(changed, 202)["phone_pending"] == "+1415\u2022\u2022\u20220123"


async def test_the_current_password_in_the_body_is_proof_enough(api: Api) -> None:
    await api.signed_up()
    token = (await login(api))["token"]
    api.clock.advance(api.services.settings.step_up_seconds + 1)
    wrong = {"phone": PHONE, "current_password": "not it"}
    refused = await api.client.patch("/api/auth/profile", json=wrong, headers=bearer(token))
    assert assert_error(refused, 401)["code"] == "invalid_credentials"
    right = {"phone": PHONE, "current_password": PASSWORD}
    changed = await api.client.patch("/api/auth/profile", json=right, headers=bearer(token))
    assert assert_success(changed, 202)["user"]["phone"] is None  # pending until confirmed
    gone = await api.client.request(
        "DELETE", "/api/auth/profile", json={"password": PASSWORD}, headers=bearer(token)
    )
    assert_success(gone, 200)  # deletion carries its password: no step-up of its own


async def test_reauth_is_rate_limited_per_client_address(api: Api) -> None:
    await api.signed_up()
    token = (await login(api))["token"]
    limits = {"reauth_ip": "1/minute", "reauth_account": ""}
    api.services.ctx = replace(api.services.ctx, limiter=LimitsRateLimiter(limits))
    body = {"password": "not it"}
    first = await api.client.post("/api/auth/reauth", json=body, headers=bearer(token))
    assert_error(first, 401)
    second = await api.client.post("/api/auth/reauth", json=body, headers=bearer(token))
    assert assert_error(second, 429)["code"] == "rate_limited"
    assert int(second.headers["Retry-After"]) > 0


async def test_a_profile_read_checks_its_session_in_its_one_statement(api: Api) -> None:
    await api.signed_up()
    token = (await login(api))["token"]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = api.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert_success(await profile(api, token), 200)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert "FROM users" in statements[0] and "sessions" in statements[0]
