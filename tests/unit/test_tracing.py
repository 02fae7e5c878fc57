"""Tracing in-process, exported to a real OTLP/HTTP receiver (tests/otlp_sink.py): the server
span of each request with its route template and request id, a trace continued from a trusted
proxy only, the context carried by outbox rows and job data; and, off, no OpenTelemetry module
loaded at all. Across processes: tests/e2e/test_traces_e2e.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.entrypoints.app import create_app
from gatehouse.observability.access_log import AccessLog
from gatehouse.outbox.relay import Relay
from gatehouse.ports.telemetry import TRACE_FIELD
from gatehouse.storage.migrate import upgrade
from tests.otlp_sink import OtlpSink, ReceivedSpan, otlp_sink

from .helpers import offline_settings

PARENT_TRACE, PARENT_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpSink]:
    with otlp_sink() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
        yield receiver


@pytest.fixture
async def traced(
    tmp_path: Path, sink: OtlpSink
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = offline_settings(
        tmp_path, trusted_proxies=["10.0.0.0/8"], rate_limits={}, answer_floor_ms=0
    )
    services = build(settings, role="api")
    assert services.tracer is not None
    await upgrade(services.engine)
    app = create_app(services)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield services, client
    finally:
        await services.aclose()  # flushes the spans


def server_span(sink: OtlpSink, request_id: str) -> ReceivedSpan:
    spans = sink.wait_for(
        lambda spans: any(s.attributes.get("gatehouse.request_id") == request_id for s in spans),
        timeout=10,
        what=request_id,
    )
    [span] = [s for s in spans if s.attributes.get("gatehouse.request_id") == request_id]
    return span


def spans_with(sink: OtlpSink, span_id: str) -> list[ReceivedSpan]:
    def found(spans: list[ReceivedSpan]) -> bool:
        return any(s.span_id == span_id for s in spans)

    return [s for s in sink.wait_for(found, timeout=10, what=span_id) if s.span_id == span_id]


async def test_each_request_is_a_server_span_named_by_its_route(
    traced: tuple[Services, httpx.AsyncClient], sink: OtlpSink
) -> None:
    _, client = traced
    reply = await client.get("/api/jobs/read-user/some-job-id-0123456789")
    assert reply.status_code == 404
    span = server_span(sink, reply.headers["x-request-id"])
    assert (span.name, span.kind, span.service) == (
        "GET /api/jobs/{queue}/{job_id}",
        "server",
        "gatehouse-api",
    )
    assert span.attributes["http.route"] == "/api/jobs/{queue}/{job_id}"
    assert span.attributes["http.response.status_code"] == 404
    assert "some-job-id" not in json.dumps(span.attributes)


async def test_a_trace_is_continued_only_from_a_trusted_proxy(
    tmp_path: Path, sink: OtlpSink
) -> None:
    services = build(offline_settings(tmp_path, trusted_proxies=["10.0.0.0/8"]), role="api")
    await upgrade(services.engine)
    app = create_app(services)
    try:
        for peer, continued in (("10.1.2.3", True), ("192.0.2.7", False)):
            transport = httpx.ASGITransport(app=app, client=(peer, 4000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                reply = await client.get("/health/live", headers={"traceparent": TRACEPARENT})
            span = server_span(sink, reply.headers["x-request-id"])
            assert (span.trace_id == PARENT_TRACE) is continued, peer
            assert (span.parent_id == PARENT_SPAN) is continued, peer
    finally:
        await services.aclose()


async def test_outbox_rows_carry_the_context_and_the_relay_moves_it_to_headers(
    traced: tuple[Services, httpx.AsyncClient], sink: OtlpSink
) -> None:
    services, client = traced
    body = {"name": "Ada", "email": "ada@example.com", "password": "correct horse battery"}
    reply = await client.post("/api/auth/register", json=body)
    assert reply.status_code == 202
    request = server_span(sink, reply.headers["x-request-id"])
    relay = Relay(
        services.outbox_store,
        services.publisher,
        batch=10,
        interval=0.01,
        clock=services.ctx.clock,
        tracer=services.tracer,
    )
    assert await relay.run_once() == 2
    assert services.bus is not None
    for record in services.bus.published:
        assert TRACE_FIELD not in json.loads(record.value)  # never in what consumers read
        trace_id, span_id = record.headers["traceparent"].split("-")[1:3]
        assert trace_id == request.trace_id
        [publish] = spans_with(sink, span_id)
        assert publish.name == f"publish {record.topic}" and publish.parent_id == request.span_id


async def test_the_job_door_puts_its_context_in_the_data(
    traced: tuple[Services, httpx.AsyncClient], sink: OtlpSink
) -> None:
    services, client = traced
    forged = f"00-{'1' * 32}-{'2' * 16}-01"
    reply = await client.post(
        "/api/jobs/read-user", json={"data": {"token": "x", "traceparent": forged}}
    )
    assert reply.status_code == 202
    request = server_span(sink, reply.headers["x-request-id"])
    state = await services.jobs.get("read-user", reply.json()["data"]["job_id"])
    assert state is not None
    entry = services.jobs._entries[("read-user", state.id)]  # type: ignore[attr-defined]
    trace_id, span_id = entry.data["traceparent"].split("-")[1:3]
    assert trace_id == request.trace_id  # the door's own span, never the client's
    [submit] = spans_with(sink, span_id)
    assert submit.name == "publish read-user" and submit.parent_id == request.span_id


OFF_PROBE = textwrap.dedent(
    """
    import asyncio, os, sys, tempfile
    from pathlib import Path
    from gatehouse.entrypoints.launch import leave_out
    leave_out("api")  # as `gatehouse api` does first
    import httpx
    from gatehouse.bootstrap import build
    from gatehouse.entrypoints.app import create_app
    from gatehouse.storage.migrate import upgrade
    from tests.unit.helpers import offline_settings

    async def main():
        services = build(offline_settings(Path(tempfile.mkdtemp())), role="api")
        await upgrade(services.engine)
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/health/live")
        await services.aclose()
        # FastAPI imports the OpenTelemetry API (a no-op without an SDK) whatever we do.
        ours = ("opentelemetry.sdk", "opentelemetry.exporter", "gatehouse.observability.otel")
        loaded = sorted(m for m, mod in sys.modules.items() if mod and m.startswith(ours))
        print(services.tracer, loaded)

    asyncio.run(main())
    """
)


def test_off_neither_the_sdk_nor_the_exporter_is_loaded() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip().splitlines()[-1] == "None []"


LAUNCH_PROBE = textwrap.dedent(
    """
    import sys
    from gatehouse.entrypoints.launch import leave_out
    leave_out(sys.argv[1])
    import redis.asyncio
    from gatehouse.bootstrap import build_tracer
    tracer = build_tracer(sys.argv[1])
    usable = [n for n in ("requests", "opentelemetry.sdk") if sys.modules.get(n, 1) is not None]
    print(tracer is not None, usable)
    """
)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("", "False []"), ("http://127.0.0.1:9/", "True ['requests', 'opentelemetry.sdk']")],
)
def test_an_api_that_traces_keeps_what_the_exporter_needs(endpoint: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH_PROBE, "api"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == expected


async def test_an_answer_made_beforehand_is_a_server_span_too(
    traced: tuple[Services, httpx.AsyncClient], sink: OtlpSink
) -> None:
    """A replayed answer (web/replays.py) goes through `AccessLog.answer`: its span is named
    and described as the route's, with the request id it was sent with."""
    services, client = traced
    app = client._transport.app  # type: ignore[attr-defined]
    log = AccessLog(app, router=app.router, tracer=services.tracer)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/api/auth/profile", "headers": []}
    made = ((b"content-type", b"application/json"),)
    await log.answer(scope, send, 200, made, b"{}")
    [(_, rid)] = [h for h in sent[0]["headers"] if h[0] == b"x-request-id"]
    assert sent[1] == {"type": "http.response.body", "body": b"{}"}
    span = server_span(sink, rid.decode())
    assert (span.name, span.kind) == ("GET /api/auth/profile", "server")
    assert span.attributes["http.response.status_code"] == 200
