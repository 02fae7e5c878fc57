"""`GET /metrics` after real traffic, in-process (the app, the embedded queue and bus, the relay
and the courier on SQLite): every metric of DESIGN 11 listed before its first sample, and each
count moved by exactly what was done. The multi-process sum is tests/e2e/test_metrics_e2e.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gatehouse.domain import events
from gatehouse.entrypoints.processes import courier_role
from gatehouse.jobs.worker import worker_role
from gatehouse.observability.prometheus import HTTP_BUCKETS, prometheus_metrics
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.relay import Relay
from gatehouse.ports.telemetry import NoMetrics
from tests.fakes import MemoryDatabase, MemoryOutboxStore

from .api_client import EMAIL, PASSWORD, Api
from .helpers import FakeClock

# DESIGN 11's names, as exposed and queried (and one more: what the relay published).
DESIGNED = {
    "gatehouse_http_requests_total": "counter",
    "gatehouse_http_request_duration_seconds": "histogram",
    "gatehouse_logins_total": "counter",
    "gatehouse_jobs_total": "counter",
    "gatehouse_job_duration_seconds": "histogram",
    "gatehouse_outbox_pending": "gauge",
    "gatehouse_outbox_lag_seconds": "gauge",
    "gatehouse_deliveries_total": "counter",
    "gatehouse_password_hash_seconds": "histogram",
    "gatehouse_socketio_connections": "gauge",
    "gatehouse_webhook_deliveries_total": "counter",
    "gatehouse_outbox_published_total": "counter",
}


@dataclass
class Scrape:
    text: str
    types: dict[str, str]
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)


def parse(text: str) -> Scrape:
    types, values = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(text, types, values)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after(name, **labels) - before(name, **labels)


def relay_of(api: Api) -> Relay:
    s = api.services
    return Relay(
        s.outbox_store, s.publisher, batch=500, interval=0.01, clock=s.ctx.clock, metrics=s.metrics
    )


async def test_every_designed_metric_is_listed_with_help_and_type(api: Api) -> None:
    now = await scrape(api.client)
    for name, kind in DESIGNED.items():
        assert now.types.get(name.removesuffix("_total")) == kind, name
        assert f"# HELP {name} " in now.text and f"\n# TYPE {name} {kind}\n" in now.text
    # Known label sets count from zero before anything happened to them.
    assert ("gatehouse_webhook_deliveries_total", (("outcome", "failed"),)) in now.values
    assert ("gatehouse_logins_total", (("factor", "totp"), ("outcome", "success"))) in now.values


async def test_a_sign_up_and_logins_move_the_counts_by_exactly_what_was_done(api: Api) -> None:
    before = await scrape(api.client)
    relay = relay_of(api)
    reply = await api.post(
        "/api/auth/register", {"name": "Ada", "email": EMAIL, "password": PASSWORD}
    )
    assert reply.status_code == 202
    await relay.run_once()
    assert api.services.bus is not None
    [command] = [json.loads(r.value) for r in api.services.bus.published if r.topic == "send-otp"]
    code = api.services.ctx.keyring.decrypt(
        command["code_ciphertext"], events.code_context(command["id"])
    )
    reply = await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code})
    assert reply.status_code == 201
    user = reply.json()["data"]["user"]
    await api.logged_in()
    wrong = await api.post("/api/auth/login", {"email": EMAIL, "password": "not the password"})
    assert wrong.status_code == 401
    token = (await api.logged_in())["token"]
    profile = await api.client.get(
        "/api/auth/profile", headers={"authorization": f"Bearer {token}"}
    )
    assert profile.status_code == 200
    await relay.run_once()
    after = await scrape(api.client)

    def requests(route: str, method: str, status: int) -> float:
        labels = {"route": route, "method": method, "status": str(status)}
        return moved(before, after, "gatehouse_http_requests_total", **labels)

    assert requests("/api/auth/register", "POST", 202) == 1
    assert requests("/api/auth/verify-otp", "POST", 201) == 1
    assert requests("/api/auth/login", "POST", 200) == 2
    assert requests("/api/auth/login", "POST", 401) == 1
    assert requests("/api/auth/profile", "GET", 200) == 1  # the hot path counts too
    timed = "gatehouse_http_request_duration_seconds_count"
    assert moved(before, after, timed, route="/api/auth/login", method="POST") == 3
    assert moved(before, after, "gatehouse_logins_total", outcome="success", factor="password") == 2
    assert moved(before, after, "gatehouse_logins_total", outcome="failure", factor="password") == 1
    # One hash at sign-up, one verification a sign-in.
    assert moved(before, after, "gatehouse_password_hash_seconds_count") == 4
    published = "gatehouse_outbox_published_total"
    assert moved(before, after, published, topic="send-otp", type="verify-email") == 1
    for kind, count in ((events.REGISTERED, 1), (events.VERIFIED, 1), (events.LOGGED_IN, 2)):
        assert moved(before, after, published, topic="user-events", type=kind) == count, kind
    for secret in (EMAIL, PASSWORD, token, user["id"]):
        assert secret not in after.text


async def test_jobs_are_counted_and_timed_by_queue_and_outcome(api: Api) -> None:
    await api.signed_up()
    token = (await api.logged_in())["token"]
    before = await scrape(api.client)
    stop = asyncio.Event()
    worker = asyncio.create_task(worker_role(["read-user"])(api.services)(stop))
    try:
        ids = []
        for data in ({"token": token}, {"token": "not-a-token"}):
            reply = await api.client.post("/api/jobs/read-user", json={"data": data})
            assert reply.status_code == 202
            ids.append(reply.json()["data"]["job_id"])
        for job_id in ids:
            for _ in range(200):
                state = (await api.client.get(f"/api/jobs/read-user/{job_id}")).json()["data"]
                if state["state"] == "completed":
                    break
                await asyncio.sleep(0.02)
            assert state["state"] == "completed"
    finally:
        stop.set()
        await worker
    after = await scrape(api.client)
    jobs = "gatehouse_jobs_total"
    assert moved(before, after, jobs, queue="read-user", outcome="completed") == 1
    assert moved(before, after, jobs, queue="read-user", outcome="refused") == 1
    assert moved(before, after, "gatehouse_job_duration_seconds_count", queue="read-user") == 2
    door = {"route": "/api/jobs/{queue}", "method": "POST", "status": "202"}
    assert moved(before, after, "gatehouse_http_requests_total", **door) == 2


async def test_the_courier_counts_what_it_sent_by_channel(api: Api) -> None:
    before = await scrape(api.client)
    reply = await api.post(
        "/api/auth/register", {"name": "Ada", "email": EMAIL, "password": PASSWORD}
    )
    assert reply.status_code == 202
    await relay_of(api).run_once()
    stop = asyncio.Event()
    courier = asyncio.create_task(courier_role(api.services)(stop))
    try:
        for _ in range(200):
            now = await scrape(api.client)
            if moved(before, now, "gatehouse_deliveries_total", channel="email", outcome="sent"):
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await courier
    after = await scrape(api.client)
    assert moved(before, after, "gatehouse_deliveries_total", channel="email", outcome="sent") == 1
    assert moved(before, after, "gatehouse_deliveries_total", channel="none", outcome="sent") == 0


async def test_route_labels_are_templates_and_methods_a_known_few(api: Api) -> None:
    before = await scrape(api.client)
    secret = "job-of-someone-secret-0123456789"
    await api.client.get(f"/api/jobs/read-user/{secret}")
    await api.client.request("BREW", "/health/live")
    await api.client.get(f"/{secret}")
    after = await scrape(api.client)
    reads = {"route": "/api/jobs/{queue}/{job_id}", "method": "GET", "status": "404"}
    assert moved(before, after, "gatehouse_http_requests_total", **reads) == 1
    other = {"route": "/health/live", "method": "other", "status": "405"}
    assert moved(before, after, "gatehouse_http_requests_total", **other) == 1
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert moved(before, after, "gatehouse_http_requests_total", **unmatched) == 1
    assert secret not in after.text and "BREW" not in after.text


class Recording(NoMetrics):
    """The relay's gauges as it sets them."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.pending: list[int] = []
        self.counts: list[dict[tuple[str, str], int]] = []

    def outbox(self, *, pending: int | None = None, lag_seconds: float | None = None) -> None:
        if pending is not None:
            self.pending.append(pending)
        if lag_seconds is not None:
            self.lags.append(lag_seconds)

    def published(self, counts: Mapping[tuple[str, str], int]) -> None:
        self.counts.append(dict(counts))


class DownBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def publish(self, records: object) -> None:
        if self.down:
            raise ConnectionError("broker down")
        await super().publish(records)  # type: ignore[arg-type]


async def test_the_outbox_lag_grows_while_the_relay_cannot_publish(
    db: MemoryDatabase, clock: FakeClock
) -> None:
    async with db.uow() as uow:
        await uow.outbox.add(events.user_event(events.REGISTERED, "u-1", {}, clock.now))
        await uow.commit()
    metrics, bus = Recording(), DownBus()
    relay = Relay(
        MemoryOutboxStore(db, clock), bus, batch=10, interval=0.01, clock=clock, metrics=metrics
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    for _ in range(3):
        await asyncio.sleep(0.05)
        clock.advance(10)
    while len(metrics.lags) < 2:
        await asyncio.sleep(0.01)
    assert metrics.pending[0] == 1  # measured when it starts
    assert metrics.lags == sorted(metrics.lags) and metrics.lags[-1] >= 10
    bus.down = False
    while not metrics.lags or metrics.lags[-1] != 0.0:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert metrics.counts[-1] == {("user-events", events.REGISTERED): 1}


def test_durations_land_in_the_buckets_prometheus_clients_observe_puts_them_in() -> None:
    """The access log's short way to the histogram's values agrees with `observe`."""
    metrics = prometheus_metrics()
    reference = Histogram("reference", "", buckets=HTTP_BUCKETS, registry=CollectorRegistry())
    route = f"/test/{uuid.uuid4().hex}"  # a series of this test's own
    for seconds in (0.0, 0.005, 0.0051, 0.03, 0.05, 1.0, 9.99, 10.0, 42.0):
        metrics.http_request("GET", route, 200, seconds)
        reference.observe(seconds)
    metrics.http_request("GET", route, 200, None)  # counted, not timed
    metrics.flush()
    ours = {
        (
            s.name.removeprefix("gatehouse_http_request_duration_seconds"),
            s.labels.get("le"),
        ): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.labels.get("route") == route and "duration" in s.name
    }
    theirs = {
        (s.name.removeprefix("reference"), s.labels.get("le")): s.value
        for family in reference.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }
    assert {k: v for k, v in ours.items() if k[0] != "_created"} == theirs
    requests = metrics.requests.labels(route, "GET", "200")._value.get()
    assert requests == 10
