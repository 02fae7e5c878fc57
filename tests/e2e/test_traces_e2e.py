"""Traces and metrics ports end to end: `gatehouse api`, `worker`, `relay` and `courier` as
processes on PostgreSQL, Redis, Kafka and an SMTP sink, exporting spans by OTLP/HTTP to a real
receiver started here (tests/otlp_sink.py decodes `ExportTraceServiceRequest`).

- A sign-up is one trace across three processes: the api's request, the relay's publish (a
  child of the request, through the outbox row), the courier's processing (a child of the
  publish, through the Kafka `traceparent` header) and its SMTP send.
- A job is one trace from the HTTP door through the worker to its Socket.IO push; a Node bullmq
  producer's job starts its trace at the worker, or continues the `traceparent` of its data.
- worker, relay and courier answer GET /metrics on GATEHOUSE_METRICS_PORT, with exact counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import MailSink, free_port, unique
from tests.e2e.stack import (
    INTEROP,
    Stack,
    mailed_code,
    module_mail_sink,
    node_modules,
    own_redis_db,
)
from tests.integration.conftest import create_database, drop_database
from tests.otlp_sink import OtlpSink, ReceivedSpan, otlp_sink, tree
from tests.unit.test_metrics import Scrape, parse

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
PASSWORD = "correct horse battery staple"
HEADLESS = ("worker", "relay", "courier")


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with otlp_sink() as receiver:
        yield receiver


@dataclass
class Traced:
    stack: Stack
    metrics: dict[str, str]  # role -> its /metrics URL

    @property
    def api(self) -> str:
        return self.stack.roles["api"].url


@pytest.fixture(scope="module")
def traced(
    postgres_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    module_mail_sink: MailSink,
    sink: OtlpSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("traces-e2e")
    database, admin = create_database("postgres", tmp)
    with own_redis_db(redis_url) as own_redis:
        stack = Stack.configure(tmp, database, own_redis, kafka_bootstrap, module_mail_sink.url)
        stack.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        stack.env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # ms: spans leave soon after they end
        metrics: dict[str, str] = {}
        try:
            stack.start("api", "api", port=free_port())
            for role in HEADLESS:
                port = free_port()
                stack.env["GATEHOUSE_METRICS_PORT"] = str(port)
                stack.start(role, role)
                metrics[role] = f"http://127.0.0.1:{port}/metrics"
            del stack.env["GATEHOUSE_METRICS_PORT"]
            stack.wait_ready()
            metrics["api"] = f"{stack.roles['api'].url}/metrics"
            yield Traced(stack, metrics)
        finally:
            codes = stack.stop()
            drop_database(database, admin)
    assert codes == dict.fromkeys(stack.roles, 0), stack.logs()


def one(spans: list[ReceivedSpan], name: str, **attributes: Any) -> ReceivedSpan:
    found = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, [(s.name, s.service) for s in spans])
    return found[0]


def by_request(sink: OtlpSink, request_id: str, names: set[str]) -> list[ReceivedSpan]:
    """The trace whose server span carries `request_id`, once it holds every span of `names`."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        roots = [s for s in spans if s.attributes.get("gatehouse.request_id") == request_id]
        return bool(roots) and names <= {s.name for s in sink.trace(roots[0].trace_id)}

    spans = sink.wait_for(complete, what=f"the trace of request {request_id}: {names}")
    [root] = [s for s in spans if s.attributes.get("gatehouse.request_id") == request_id]
    return sink.trace(root.trace_id)


@dataclass
class Account:
    email: str
    code: str
    register_id: str  # the register request's X-Request-ID
    token: str = ""
    user_id: str = ""


@pytest.fixture(scope="module")
def account(traced: Traced, module_mail_sink: MailSink) -> Account:
    email = f"{unique('traced')}@example.com"

    async def sign_up() -> Account:
        async with httpx.AsyncClient(base_url=traced.api, timeout=30) as client:
            body = {"name": "Ada", "email": email, "password": PASSWORD}
            reply = await client.post("/api/auth/register", json=body)
            assert reply.status_code == 202, reply.text
            code = await mailed_code(module_mail_sink, email, 1)
            account = Account(email, code, reply.headers["x-request-id"])
            reply = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
            assert reply.status_code == 201, reply.text
            reply = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert reply.status_code == 200, reply.text
            data = reply.json()["data"]
            account.token, account.user_id = data["token"], data["user"]["id"]
            return account

    return asyncio.run(sign_up())


def test_a_sign_up_is_one_trace_from_the_request_to_the_mail_server(
    traced: Traced, account: Account, sink: OtlpSink
) -> None:
    names = {"POST /api/auth/register", "publish send-otp", "process send-otp", "send email"}
    spans = by_request(sink, account.register_id, names | {"publish user-events"})
    print(f"\nsign-up trace {spans[0].trace_id}:\n{tree(spans)}")
    request = one(spans, "POST /api/auth/register")
    assert (request.service, request.kind, request.parent_id) == ("gatehouse-api", "server", "")
    assert request.attributes["http.route"] == "/api/auth/register"
    assert request.attributes["http.response.status_code"] == 202
    # The relay's publish is the request's child (the context rode in the outbox row) ...
    publish = one(spans, "publish send-otp")
    assert (publish.service, publish.kind) == ("gatehouse-relay", "producer")
    assert publish.parent_id == request.span_id
    event = one(spans, "publish user-events")
    assert event.parent_id == request.span_id
    # ... the courier's processing is the publish's (Kafka's `traceparent` header) ...
    process = one(spans, "process send-otp")
    assert (process.service, process.kind) == ("gatehouse-courier", "consumer")
    assert process.parent_id == publish.span_id
    assert process.attributes["gatehouse.delivery.outcome"] == "sent"
    # ... and the mail server's answer is the courier's SMTP call.
    send = one(spans, "send email")
    assert (send.service, send.kind, send.parent_id) == (
        "gatehouse-courier",
        "client",
        process.span_id,
    )
    assert {s.trace_id for s in spans} == {request.trace_id}


GIVEN_TRACE, GIVEN_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@dataclass
class Jobs:
    door_request_id: str  # the X-Request-ID of the HTTP door's answer
    door_job_id: str
    plain_id: str  # a Node producer's job without a trace context
    carried_id: str  # and one whose data carries `traceparent`


@pytest.fixture(scope="module")
def jobs(traced: Traced, account: Account) -> Jobs:
    """Three read-user jobs pushing to the account's room: one through the HTTP door, two from a
    Node producer (npm bullmq), the second carrying a W3C context in its data."""
    data = {"token": account.token, "notify": f"user:{account.user_id}"}
    reply = httpx.post(f"{traced.api}/api/jobs/read-user", json={"data": data}, timeout=30)
    assert reply.status_code == 202, reply.text
    carried = {**data, "traceparent": f"00-{GIVEN_TRACE}-{GIVEN_SPAN}-01"}
    plain_id, carried_id = node_jobs(traced, "read-user", [data, carried])
    return Jobs(reply.headers["x-request-id"], reply.json()["data"]["job_id"], plain_id, carried_id)


def processing(sink: OtlpSink, job_id: str) -> ReceivedSpan:
    """The worker's span of a job, once its trace holds the push too."""

    def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [
            s
            for s in spans
            if s.name == "process read-user" and s.attributes.get("messaging.message.id") == job_id
        ]

    def complete(spans: list[ReceivedSpan]) -> bool:
        found = mine(spans)
        return bool(found) and "emit notification" in {
            s.name for s in sink.trace(found[0].trace_id)
        }

    [span] = mine(sink.wait_for(complete, what=f"the trace of job {job_id}"))
    return span


def test_a_job_is_one_trace_from_its_submission_to_the_socket_push(
    jobs: Jobs, sink: OtlpSink
) -> None:
    names = {"POST /api/jobs/{queue}", "publish read-user", "process read-user"}
    spans = by_request(sink, jobs.door_request_id, names | {"emit notification"})
    print(f"\njob trace (HTTP door) {spans[0].trace_id}:\n{tree(spans)}")
    request = one(spans, "POST /api/jobs/{queue}")
    submit = one(spans, "publish read-user")
    assert (submit.service, submit.kind) == ("gatehouse-api", "producer")
    assert submit.parent_id == request.span_id
    process = one(spans, "process read-user")
    assert (process.service, process.kind) == ("gatehouse-worker", "consumer")
    assert process.parent_id == submit.span_id
    assert process.attributes["messaging.message.id"] == jobs.door_job_id
    push = one(spans, "emit notification")
    assert (push.service, push.parent_id) == ("gatehouse-worker", process.span_id)
    assert push.attributes["messaging.destination.name"] == "user"


def test_a_node_producers_job_starts_its_trace_at_the_worker_or_continues_its_own(
    jobs: Jobs, sink: OtlpSink
) -> None:
    plain = processing(sink, jobs.plain_id)
    assert (plain.parent_id, plain.service) == ("", "gatehouse-worker")
    print(f"\njob trace (Node producer) {plain.trace_id}:\n{tree(sink.trace(plain.trace_id))}")
    followed = processing(sink, jobs.carried_id)
    assert (followed.trace_id, followed.parent_id) == (GIVEN_TRACE, GIVEN_SPAN)


def node_jobs(traced: Traced, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
    node_modules()
    redis = traced.stack.env["GATEHOUSE_REDIS_URL"]
    done = subprocess.run(
        ["node", str(INTEROP / "add_jobs.mjs"), queue, json.dumps(jobs)],
        cwd=INTEROP,
        env={**os.environ, "REDIS_URL": redis},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [str(i) for i in json.loads(done.stdout.strip().splitlines()[-1])]


def scrape(url: str) -> Scrape:
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200
    return parse(reply.text)


def eventually(url: str, check: Any, what: str, timeout: float = 20) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        now = scrape(url)
        if check(now):
            return now
        assert time.monotonic() < deadline, f"{what}:\n{now.text}"
        time.sleep(0.2)


def test_each_process_reports_exactly_what_it_did(
    traced: Traced, account: Account, jobs: Jobs, sink: OtlpSink
) -> None:
    # One sign-up (one code mailed), one sign-in, three read-user jobs; each process is fresh,
    # so its counts are exactly these.
    for job_id in (jobs.door_job_id, jobs.plain_id, jobs.carried_id):
        processing(sink, job_id)
    worker = scrape(traced.metrics["worker"])
    assert worker("gatehouse_jobs_total", queue="read-user", outcome="completed") == 3
    assert worker("gatehouse_job_duration_seconds_count", queue="read-user") == 3
    courier = scrape(traced.metrics["courier"])
    assert courier("gatehouse_deliveries_total", channel="email", outcome="sent") == 1
    published = "gatehouse_outbox_published_total"
    kinds = ("gatehouse.user.registered", "gatehouse.user.verified", "gatehouse.user.logged_in")
    relay = eventually(
        traced.metrics["relay"],
        lambda r: (
            r(published, topic="user-events", type=kinds[-1]) >= 1
            and r("gatehouse_outbox_pending") == 0
        ),
        "the relay's counts",
    )
    assert relay(published, topic="send-otp", type="verify-email") == 1
    for kind in kinds:
        assert relay(published, topic="user-events", type=kind) == 1, kind
    api = scrape(traced.metrics["api"])
    assert api("gatehouse_logins_total", outcome="success", factor="password") == 1
    register = {"route": "/api/auth/register", "method": "POST", "status": "202"}
    assert api("gatehouse_http_requests_total", **register) == 1
    # Nothing secret went into any span.
    with sink.lock:
        sent = b"".join(sink.bodies)
    for secret in (PASSWORD, account.code, account.token, account.email):
        assert secret.encode() not in sent
