"""The HTTP api in-process: real Services (SQLite in a temp dir, embedded bus), migrations, the
FastAPI app driven through httpx's ASGI transport. Statuses and envelopes of docs/http-api.md,
no 500, and no half-written row after a refused request."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from gatehouse.domain import events
from gatehouse.storage.schema import users

from .api_client import EMAIL, PASSWORD, Api
from .helpers import other_code


def assert_success(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "success"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["data"], dict)
    data: dict[str, Any] = body["data"]
    return data


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["code"], str)
    assert body["code"]
    assert isinstance(body.get("errors", []), list)
    assert "data" not in body
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    return {str(e["field"]) for e in body["errors"]}


def assert_no_secrets(text: str) -> None:
    assert "password_hash" not in text
    assert "$argon2" not in text
    assert PASSWORD not in text


class TestOnboarding:
    async def test_register_verify_login_profile(self, api: Api) -> None:
        data = assert_success(
            await api.post(
                "/api/auth/register",
                {"name": "Ada", "email": "Ada@Example.com", "password": PASSWORD},
            ),
            202,
        )
        assert data["email"] == EMAIL
        assert data["expires_in"] == 600
        assert (await api.counts())["users"] == 0
        assert (await api.counts())["pending_registrations"] == 1
        [code] = await api.sent_codes(EMAIL)

        data = assert_success(
            await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code}), 201
        )
        user = data["user"]
        assert user["email"] == EMAIL
        assert user["name"] == "Ada"
        assert user["email_verified"] is True
        assert_no_secrets(json.dumps(data))
        counts = await api.counts()
        assert (counts["users"], counts["pending_registrations"]) == (1, 0)

        response = await api.post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
        data = assert_success(response, 200)
        assert response.json()["message"] == "Logged in successfully"
        assert {"token", "refresh_token", "user"} <= set(data)
        assert data["user"]["id"] == user["id"]
        assert_no_secrets(response.text)
        claims = api.services.ctx.tokens.verify(data["token"], api.clock.now)
        assert claims.sub == user["id"]

        response = await api.client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {data['token']}"}
        )
        profile = assert_success(response, 200)["user"]
        assert profile["id"] == user["id"]
        assert profile["email"] == EMAIL
        assert_no_secrets(response.text)

    async def test_events_of_one_registration(self, api: Api) -> None:
        user = await api.signed_up()
        await api.logged_in()
        await api.sent_codes(EMAIL)  # runs the relay
        assert api.services.bus is not None
        cloud = [r for r in api.services.bus.published if r.topic == events.USER_EVENTS]
        assert [json.loads(r.value)["type"] for r in cloud] == [
            events.REGISTERED,
            events.VERIFIED,
            events.LOGGED_IN,
        ]
        assert {r.key for r in cloud} == {user["id"]}
        assert {r.headers["content-type"] for r in cloud} == {"application/cloudevents+json"}

    async def test_phone_round_trip(self, api: Api) -> None:
        body = {"name": "Ada", "email": EMAIL, "password": PASSWORD, "phone": "+1 415 555 0123"}
        assert_success(await api.post("/api/auth/register", body), 202)
        [code] = await api.sent_codes(EMAIL)
        assert_success(await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code}), 201)
        token = (await api.logged_in())["token"]
        response = await api.client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {token}"}
        )
        assert assert_success(response, 200)["user"]["phone"] == "+14155550123"
        async with api.services.engine.connect() as conn:
            stored = (await conn.execute(select(users.c.phone_ciphertext))).scalar_one()
        assert "4155550123" not in stored

    async def test_resend(self, api: Api) -> None:
        body = {"name": "Ada", "email": EMAIL, "password": PASSWORD}
        assert_success(await api.post("/api/auth/register", body), 202)
        data = assert_success(await api.post("/api/auth/resend-otp", {"email": EMAIL}), 202)
        assert data == {"email": EMAIL, "expires_in": 600}
        codes = await api.sent_codes(EMAIL)
        assert len(codes) == 2
        assert_success(
            await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": codes[-1]}), 201
        )

    async def test_refresh_and_logout(self, api: Api) -> None:
        await api.signed_up()
        session = await api.logged_in()
        data = assert_success(
            await api.post("/api/auth/refresh", {"refresh_token": session["refresh_token"]}), 200
        )
        assert {"token", "refresh_token", "user"} <= set(data)
        assert data["refresh_token"] != session["refresh_token"]
        replay = await api.post("/api/auth/refresh", {"refresh_token": session["refresh_token"]})
        assert_error(replay, 401)
        assert_error(
            await api.post("/api/auth/refresh", {"refresh_token": data["refresh_token"]}), 401
        )

        other = await api.logged_in()
        assert_success(
            await api.post("/api/auth/logout", {"refresh_token": other["refresh_token"]}), 200
        )
        assert_error(
            await api.post("/api/auth/refresh", {"refresh_token": other["refresh_token"]}), 401
        )


class TestNoEnumeration:
    async def test_register_answers_alike_for_new_and_existing_emails(self, api: Api) -> None:
        body = {"name": "Ada", "email": EMAIL, "password": PASSWORD}
        as_new = await api.post("/api/auth/register", body)
        [code] = await api.sent_codes(EMAIL)
        assert_success(await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code}), 201)

        as_existing = await api.post("/api/auth/register", {**body, "password": "other password"})

        assert as_existing.status_code == as_new.status_code == 202
        assert as_existing.json() == as_new.json()
        assert await api.sent_codes(EMAIL) == [code]  # no new code for an existing account

    async def test_login_answers_alike_for_unknown_email_and_wrong_password(self, api: Api) -> None:
        await api.signed_up()
        unknown = await api.post(
            "/api/auth/login", {"email": "nobody@example.com", "password": PASSWORD}
        )
        wrong = await api.post("/api/auth/login", {"email": EMAIL, "password": "wrong password"})
        assert_error(unknown, 401)
        assert unknown.json() == wrong.json()


REGISTER = {"name": "Ada", "email": EMAIL, "password": PASSWORD}

# (path, raw body, status, fields the errors must name)
BAD_REQUESTS: list[tuple[str, bytes, int, set[str]]] = [
    ("/api/auth/register", b'{"name": "Ada", "email": ', 400, set()),
    ("/api/auth/register", b"not json", 400, set()),
    ("/api/auth/register", b"\xff\xfe\x00", 400, set()),
    ("/api/auth/register", json.dumps([REGISTER]).encode(), 400, set()),
    ("/api/auth/register", b'"a string"', 400, set()),
    ("/api/auth/register", b"null", 400, set()),
    ("/api/auth/register", b"{}", 422, {"name", "email", "password"}),
    ("/api/auth/register", json.dumps({**REGISTER, "name": None}).encode(), 422, {"name"}),
    (
        "/api/auth/register",
        json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
        422,
        {"name"},
    ),
    ("/api/auth/register", json.dumps({**REGISTER, "role": "admin"}).encode(), 422, {"role"}),
    ("/api/auth/register", json.dumps({**REGISTER, "is_admin": True}).encode(), 422, {"is_admin"}),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "email_verified": True}).encode(),
        422,
        {"email_verified"},
    ),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "email": "not-an-email"}).encode(),
        422,
        {"email"},
    ),
    ("/api/auth/register", json.dumps({**REGISTER, "email": "a@b@c.com"}).encode(), 422, {"email"}),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "password": "short"}).encode(),
        422,
        {"password"},
    ),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "password": 12345678}).encode(),
        422,
        {"password"},
    ),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "password": "x" * 300}).encode(),
        422,
        {"password"},
    ),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "password": "x" * 5000}).encode(),
        422,
        {"password"},
    ),
    (
        "/api/auth/register",
        json.dumps({**REGISTER, "name": "Ada\r\nBcc: x"}).encode(),
        422,
        {"name"},
    ),
    ("/api/auth/register", json.dumps({**REGISTER, "name": "a" * 201}).encode(), 422, {"name"}),
    ("/api/auth/register", json.dumps({**REGISTER, "phone": "12345"}).encode(), 422, {"phone"}),
    ("/api/auth/verify-otp", b"{oops", 400, set()),
    ("/api/auth/verify-otp", b"[]", 400, set()),
    ("/api/auth/verify-otp", json.dumps({"email": EMAIL}).encode(), 422, {"otp"}),
    ("/api/auth/verify-otp", json.dumps({"email": "x", "otp": "123456"}).encode(), 422, {"email"}),
    (
        "/api/auth/verify-otp",
        json.dumps({"email": EMAIL, "otp": "123456", "role": "admin"}).encode(),
        422,
        {"role"},
    ),
    ("/api/auth/verify-otp", json.dumps({"email": EMAIL, "otp": "12ab56"}).encode(), 400, set()),
    ("/api/auth/login", b"{", 400, set()),
    ("/api/auth/login", b"[1, 2]", 400, set()),
    ("/api/auth/login", json.dumps({"email": EMAIL}).encode(), 422, {"password"}),
    (
        "/api/auth/login",
        json.dumps({"email": "nope", "password": PASSWORD}).encode(),
        422,
        {"email"},
    ),
    (
        "/api/auth/login",
        json.dumps({"email": EMAIL, "password": PASSWORD, "is_admin": True}).encode(),
        422,
        {"is_admin"},
    ),
    (
        "/api/auth/login",
        json.dumps({"email": "x@example.com", "password": PASSWORD}).encode(),
        401,
        set(),
    ),
    ("/api/auth/resend-otp", b"]", 400, set()),
    ("/api/auth/resend-otp", json.dumps({}).encode(), 422, {"email"}),
    ("/api/auth/refresh", json.dumps({"refresh_token": "rt_forged"}).encode(), 401, set()),
    ("/api/auth/refresh", json.dumps({}).encode(), 422, {"refresh_token"}),
    ("/api/auth/logout", b"nope", 400, set()),
]


class TestBadRequests:
    @pytest.mark.parametrize(
        ("path", "content", "status", "fields"),
        BAD_REQUESTS,
        ids=[f"{p.rsplit('/', 1)[1]}-{i}" for i, (p, *_rest) in enumerate(BAD_REQUESTS)],
    )
    async def test_refused_with_the_envelope_and_nothing_written(
        self, api: Api, path: str, content: bytes, status: int, fields: set[str]
    ) -> None:
        await api.signed_up()
        await api.post("/api/auth/register", {**REGISTER, "email": "pending@example.com"})
        before = await api.counts()

        body = assert_error(await api.post_raw(path, content), status)

        assert fields <= fields_of(body)
        if status == 422:
            assert body["errors"]
            for error in body["errors"]:
                assert {"field", "message"} <= set(error)
        assert await api.counts() == before

    async def test_wrong_code(self, api: Api) -> None:
        assert_success(await api.post("/api/auth/register", REGISTER), 202)
        [code] = await api.sent_codes(EMAIL)
        before = await api.counts()
        body = assert_error(
            await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": other_code(code)}), 400
        )
        assert body["code"] == "invalid_code"
        assert await api.counts() == before
        assert_success(await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code}), 201)

    async def test_expired_code(self, api: Api) -> None:
        assert_success(await api.post("/api/auth/register", REGISTER), 202)
        [code] = await api.sent_codes(EMAIL)
        api.clock.advance(11 * 60)
        before = await api.counts()
        assert_error(await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code}), 400)
        assert await api.counts() == before

    async def test_wrong_password(self, api: Api) -> None:
        await api.signed_up()
        before = await api.counts()
        body = assert_error(
            await api.post("/api/auth/login", {"email": EMAIL, "password": "wrong password"}), 401
        )
        assert body["code"] == "invalid_credentials"
        # Only the login_failed event is written: no session.
        assert await api.counts() == {**before, "outbox": before["outbox"] + 1}

    async def test_unknown_path_and_method(self, api: Api) -> None:
        assert assert_error(await api.client.get("/no/such/path"), 404)["code"] == "not_found"
        assert_error(await api.client.post("/api/auth/nothing-here", json={}), 404)
        assert_error(await api.client.get("/api/auth/register"), 405)


class TestBearerToken:
    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Basic YWRhOnB3",
            "Token abc",
            "Bearer not-a-jwt",
            "Bearer a.b.c",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        ],
    )
    async def test_missing_or_malformed(self, api: Api, header: str | None) -> None:
        headers = {} if header is None else {"Authorization": header}
        response = await api.client.get("/api/auth/profile", headers=headers)
        assert assert_error(response, 401)["code"] == "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    async def test_expired(self, api: Api) -> None:
        user = await api.signed_up()
        token = (await api.logged_in())["token"]
        api.clock.advance(16 * 60)
        response = await api.client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {token}"}
        )
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        # A token expired by the wall clock too (signed by the service's own key).
        key = api.services.ctx.secrets.signing_keys[-1]
        past = api.clock.now - timedelta(hours=2)
        stale = jwt.encode(
            {
                "iss": "gatehouse",
                "aud": "gatehouse",
                "sub": user["id"],
                "sid": "s",
                "jti": "j",
                "typ": "at+jwt",
                "iat": int(past.timestamp()),
                "nbf": int(past.timestamp()),
                "exp": int((past + timedelta(minutes=15)).timestamp()),
            },
            key.private_key,
            algorithm="EdDSA",
            headers={"kid": key.kid, "typ": "at+jwt"},
        )
        response = await api.client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {stale}"}
        )
        assert_error(response, 401)
        assert "WWW-Authenticate" in response.headers

    async def test_deleted_user(self, api: Api) -> None:
        user = await api.signed_up()
        token = (await api.logged_in())["token"]
        async with api.services.engine.begin() as conn:
            await conn.execute(users.delete().where(users.c.id == user["id"]))
        response = await api.client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {token}"}
        )
        assert_error(response, 401)


class TestOperations:
    async def test_health(self, api: Api) -> None:
        assert assert_success(await api.client.get("/health/live"), 200)
        data = assert_success(await api.client.get("/health/ready"), 200)
        assert data["checks"]["database"] == "up"

    async def test_ready_reports_a_dead_dependency(self, api: Api) -> None:
        async def down() -> None:
            raise ConnectionError("gone")

        api.services.checks["database"] = down
        body = assert_error(await api.client.get("/health/ready"), 503)
        assert "database" in fields_of(body)

    async def test_jwks_publishes_the_signing_key(self, api: Api) -> None:
        await api.signed_up()
        token = (await api.logged_in())["token"]
        response = await api.client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        keys = response.json()["keys"]
        kid = jwt.get_unverified_header(token)["kid"]
        [entry] = [k for k in keys if k["kid"] == kid]
        assert (entry["kty"], entry["crv"], entry["alg"]) == ("OKP", "Ed25519", "EdDSA")
        assert "d" not in entry
        claims = jwt.decode(token, jwt.PyJWK(entry).key, algorithms=["EdDSA"], audience="gatehouse")
        assert claims["typ"] == "at+jwt"
