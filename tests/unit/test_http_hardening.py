"""HTTP hardening: security headers on every answer, no-store on auth answers, the body size cap,
the CORS allowlist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gatehouse.bootstrap import build
from gatehouse.config import Settings
from gatehouse.entrypoints.app import create_app
from gatehouse.storage.migrate import upgrade

ALLOWED = "https://app.example.com"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
        secrets_file=tmp_path / "s.json",
        cors_origins=[ALLOWED],
        max_body_bytes=2048,
        rate_limits={},
        argon2_memory_kib=1024,
        argon2_time_cost=1,
    )
    services = build(settings)
    await upgrade(services.engine)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c
    await services.aclose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health/live", None),
        ("GET", "/nope", None),
        ("POST", "/api/auth/login", {"email": "a@example.com", "password": "x"}),
        ("POST", "/api/auth/login", "not json"),
        ("GET", "/api/auth/profile", None),
    ],
)
async def test_security_headers_on_every_answer(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    reply = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    headers = reply.headers
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in headers["content-security-policy"]
    if path.startswith("/api/"):
        assert headers["cache-control"] == "no-store"


async def test_docs_page_gets_a_csp_that_lets_it_render(client: httpx.AsyncClient) -> None:
    reply = await client.get("/docs")
    assert reply.status_code == 200
    assert "script-src" in reply.headers["content-security-policy"]


async def test_oversized_bodies_are_refused_before_parsing(client: httpx.AsyncClient) -> None:
    big = {"name": "A", "email": "a@example.com", "password": "p" * 5000}
    reply = await client.post("/api/auth/register", json=big)
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"
    assert reply.headers["x-content-type-options"] == "nosniff"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    streamed = await client.post(
        "/api/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_cors_allows_only_the_allowlist(client: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    good = await client.options("/api/auth/login", headers={"Origin": ALLOWED, **preflight})
    assert good.headers["access-control-allow-origin"] == ALLOWED
    bad = await client.options(
        "/api/auth/login", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers
    simple = await client.get("/health/live", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_method_not_allowed_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    # The profile is served by three routes (GET, PATCH, DELETE) of one included router.
    reply = await client.put("/api/auth/profile")
    assert reply.status_code == 405
    assert reply.json()["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "DELETE, GET, PATCH"
    reply = await client.get("/api/auth/login")
    assert (reply.status_code, reply.headers["allow"]) == (405, "POST")
