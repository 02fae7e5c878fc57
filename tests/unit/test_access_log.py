"""The access log: every answer carries an `X-Request-ID` (hot routes, errors, 413s and 500s
included), a trusted proxy's id is kept when it is plain and short, and each request writes one
line with its method, route template, status, duration and id, never its path or query."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gatehouse.bootstrap import build
from gatehouse.entrypoints.app import create_app
from gatehouse.observability.logs import JsonFormatter
from gatehouse.storage.migrate import upgrade

from .api_client import Api
from .helpers import offline_settings

GENERATED = re.compile(r"[0-9a-f]{32}")
TOKEN = "secret-token-value"
JSON_TYPE = {"content-type": "application/json"}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gatehouse.access"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/health/live", {}, 200),
        ("GET", "/api/auth/profile", {}, 401),  # a hot route
        ("POST", "/api/auth/refresh", {"json": {"refresh_token": "nope"}}, 401),  # a hot route
        ("GET", "/no/such/page", {}, 404),
        ("DELETE", "/health/live", {}, 405),
        ("POST", "/api/auth/login", {"content": b"[1]", "headers": JSON_TYPE}, 400),
        ("POST", "/api/auth/login", {"content": b"{}", "headers": {"content-type": "text/x"}}, 415),
        ("POST", "/api/auth/login", {"json": {}}, 422),
        ("POST", "/api/auth/register", {"content": b"x" * 70_000, "headers": JSON_TYPE}, 413),
    ],
)
async def test_every_answer_has_a_request_id_and_one_line(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    reply = await api.client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert reply.status_code == status, reply.text
    rid = reply.headers["x-request-id"]
    assert GENERATED.fullmatch(rid)
    [line] = access_lines(caplog)
    fields = line.access  # type: ignore[attr-defined]
    assert fields["request_id"] == rid and fields["status"] == status
    assert fields["method"] == method and fields["duration_ms"] >= 0
    assert rid in line.getMessage()


async def test_ids_differ_from_request_to_request(api: Api) -> None:
    ids = {(await api.client.get("/health/live")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


async def test_an_unexpected_error_answers_500_with_the_id_and_logs_it(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    app = api.client._transport.app  # type: ignore[attr-defined]

    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        reply = await client.get("/boom")
    assert reply.status_code == 500 and reply.json()["code"] == "internal_error"
    [line] = access_lines(caplog)
    assert line.access["status"] == 500  # type: ignore[attr-defined]
    assert reply.headers["x-request-id"] == line.access["request_id"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (f"/api/jobs/read-user/job-{TOKEN}", "/api/jobs/{queue}/{job_id}"),
        (f"/health/live?token={TOKEN}", "/health/live"),
        (f"/api/auth/profile?code={TOKEN}", "/api/auth/profile"),  # hot: answered before routing
        (f"/{TOKEN}/x", "<unmatched>"),
    ],
)
async def test_the_line_names_the_route_template_never_the_path(
    api: Api, caplog: pytest.LogCaptureFixture, path: str, route: str
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    await api.client.get(path)
    [line] = access_lines(caplog)
    assert line.access["route"] == route  # type: ignore[attr-defined]
    assert TOKEN not in line.getMessage() and TOKEN not in JsonFormatter().format(line)


async def test_a_413_before_routing_still_names_its_route(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    reply = await api.client.post("/api/jobs/read-user", content=b"x" * 70_000, headers=JSON_TYPE)
    assert reply.status_code == 413
    [line] = access_lines(caplog)
    assert line.access["route"] == "/api/jobs/{queue}"  # type: ignore[attr-defined]


async def test_json_lines_carry_the_fields_at_the_top_level(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    reply = await api.client.get("/health/live")
    [line] = access_lines(caplog)
    entry = json.loads(JsonFormatter().format(line))
    assert entry["logger"] == "gatehouse.access" and entry["level"] == "info"
    assert {k: entry[k] for k in ("method", "route", "status", "request_id")} == {
        "method": "GET",
        "route": "/health/live",
        "status": 200,
        "request_id": reply.headers["x-request-id"],
    }
    assert isinstance(entry["duration_ms"], float)


async def test_json_lines_written_while_answering_carry_the_id(api: Api) -> None:
    app = api.client._transport.app  # type: ignore[attr-defined]
    written = io.StringIO()
    handler = logging.StreamHandler(written)  # as logs.configure's: it formats as it is called
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gatehouse.test.noisy")
    logger.addHandler(handler)

    async def noisy() -> dict[str, str]:
        logger.warning("something to look at")
        return {}

    app.add_api_route("/noisy", noisy)
    try:
        reply = await api.client.get("/noisy")
        logger.warning("outside any request")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in written.getvalue().splitlines())
    assert inside["request_id"] == reply.headers["x-request-id"]
    assert "request_id" not in outside


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with 127.0.0.1 (httpx's ASGI client address) as a trusted proxy."""
    services = build(offline_settings(tmp_path, trusted_proxies=["127.0.0.1/32"]))
    await upgrade(services.engine)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client
    await services.aclose()


@pytest.mark.parametrize("rid", ["abc-123", "f47ac10b-58cc-4372-a567-0e02b2c3d479", "a.b_C" * 12])
async def test_a_trusted_proxys_plain_id_is_kept(behind_proxy: httpx.AsyncClient, rid: str) -> None:
    reply = await behind_proxy.get("/health/live", headers={"x-request-id": rid})
    assert reply.headers["x-request-id"] == rid


@pytest.mark.parametrize("rid", ["a" * 65, "has space", "semi;colon", "é", "new\\nline", ""])
async def test_an_unfit_id_is_replaced(behind_proxy: httpx.AsyncClient, rid: str) -> None:
    reply = await behind_proxy.get("/health/live", headers={"x-request-id": rid.encode()})
    assert GENERATED.fullmatch(reply.headers["x-request-id"])


async def test_an_id_from_anyone_else_is_replaced(api: Api) -> None:
    reply = await api.client.get("/health/live", headers={"x-request-id": "chosen-by-client"})
    assert GENERATED.fullmatch(reply.headers["x-request-id"])
