"""Webhooks on the real services: `gatehouse webhooks` (a process, its own consumer group on
Kafka's `user-events`, PostgreSQL) delivering to a receiver started here that verifies every
signature with `standardwebhooks`. An endpoint that answers 500 twice, one that is down for
`DOWN_SECONDS`, one that is slow beside a fast one, and the process SIGKILLed mid-delivery.
Each test prints its figures: delivered, retried, duplicated, order kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatehouse import bootstrap
from gatehouse.domain import events
from gatehouse.domain.crypto import parse_secrets
from gatehouse.domain.webhooks import DELIVERED, WebhookDelivery
from gatehouse.outbox.kafka import KafkaPublisher, ensure_topics
from gatehouse.ports import Published
from gatehouse.storage import sql
from gatehouse.storage.sql_webhooks import SqlWebhookStore
from gatehouse.webhooks.httpx_client import HttpxWebhookClient
from gatehouse.webhooks.registry import Registry
from tests.conftest import courier_group_at_end, unique
from tests.e2e.stack import Stack
from tests.webhook_receiver import Receiver

DOWN_SECONDS = 20  # the issue says a minute; 20 s keeps the test short and spans 5+ retries
BACKOFF = {"GATEHOUSE_WEBHOOK_BACKOFF_BASE_MS": "100", "GATEHOUSE_WEBHOOK_BACKOFF_MAX_SECONDS": "1"}


@pytest.fixture
def hooks(postgres_database: str, kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.configure(tmp_path, postgres_database, "", kafka_bootstrap, "")
    group = unique("webhooks")
    stack.env.update(
        GATEHOUSE_KAFKA_WEBHOOKS_GROUP=group,
        GATEHOUSE_WEBHOOK_ALLOW_PRIVATE="true",
        GATEHOUSE_WEBHOOK_LEASE_SECONDS="3",
        GATEHOUSE_WEBHOOK_TIMEOUT_SECONDS="8",
        GATEHOUSE_LOG_LEVEL="WARNING",
        **BACKOFF,
    )
    ensure_topics(kafka_bootstrap, bootstrap.TOPICS, 3, 1)
    courier_group_at_end(kafka_bootstrap, group, events.USER_EVENTS)
    try:
        yield stack
    finally:
        stack.stop()


async def register(stack: Stack, url: str, kinds: list[str] | None = None) -> tuple[str, str]:
    engine = sql.create_engine(stack.env["GATEHOUSE_DATABASE_URL"])
    keyring = parse_secrets(stack.secrets).keyring()
    try:
        registry = Registry(
            SqlWebhookStore(engine),
            HttpxWebhookClient(),
            keyring,
            lambda: datetime.now(UTC),
            allow_private=True,
        )
        endpoint, secret = await registry.create(url, kinds or ["*"])
    finally:
        await engine.dispose()
    return endpoint.id, secret


async def deliveries(stack: Stack, webhook_id: str) -> list[WebhookDelivery]:
    engine = sql.create_engine(stack.env["GATEHOUSE_DATABASE_URL"])
    try:
        return await SqlWebhookStore(engine).deliveries(webhook_id, None, None, 10_000)
    finally:
        await engine.dispose()


def cloud_events(run: str, users: int, per_user: int) -> list[Published]:
    """`users` × `per_user` events, interleaved across users, each keyed by its user."""
    made = []
    now = datetime.now(UTC)
    for n in range(per_user):
        for u in range(users):
            message = events.user_event(events.LOGGED_IN, f"{run}-user-{u}", {"n": n}, now)
            made.append(
                Published(
                    events.USER_EVENTS,
                    message.key,
                    json.dumps(message.payload).encode(),
                    {"id": message.id, "content-type": "application/cloudevents+json"},
                )
            )
    return made


async def publish(kafka: str, records: list[Published]) -> None:
    publisher = KafkaPublisher(kafka, "gatehouse-webhook-tests")
    await publisher.start()
    try:
        await publisher.publish(records)
    finally:
        await publisher.close()


async def until(what: str, check: Callable[[], object], stack: Stack, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{stack.logs()[-6000:]}")
        await asyncio.sleep(0.1)


def in_order(records: list[Published], receiver: Receiver, path: str) -> bool:
    """Each user's events reached `path` (first receipts) in the order they were published."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for r in records:
        wanted[r.key].append(r.headers["id"])
    seen: dict[str, list[str]] = defaultdict(list)
    for got in receiver.of(path):
        if got.event["id"] not in seen[got.event["subject"]]:
            seen[got.event["subject"]].append(got.event["id"])
    return all(seen[user] == ids for user, ids in wanted.items())


async def test_500_twice_then_200_is_delivered_once_after_two_retries(
    hooks: Stack, kafka_bootstrap: str
) -> None:
    receiver = Receiver(behaviour=lambda _p, seen: (500 if seen < 2 else 200, 0.0))
    receiver.start()
    try:
        webhook_id, secret = await register(hooks, receiver.url("/flaky"))
        receiver.secrets["/flaky"] = secret
        hooks.start("webhooks", "webhooks")
        records = cloud_events(unique("flaky"), users=3, per_user=2)
        await publish(kafka_bootstrap, records)

        async def done() -> bool:
            rows = await deliveries(hooks, webhook_id)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        await until("every delivery delivered", done, hooks, 90)
    finally:
        receiver.stop()
    rows = await deliveries(hooks, webhook_id)
    got = receiver.of("/flaky")
    per_id = Counter(r.webhook_id for r in got)
    assert all(r.verified for r in got)
    assert {r.attempts for r in rows} == {3}
    assert {r.id for r in rows} == set(per_id) and set(per_id.values()) == {3}
    assert {r.last_status_code for r in rows} == {200}
    assert in_order(records, receiver, "/flaky")
    print(
        f"500 twice then 200: {len(rows)} delivered, {sum(r.attempts - 1 for r in rows)} retries,"
        f" 0 duplicated (a 2xx answered once per webhook-id), order kept"
    )


async def test_a_receiver_down_for_a_while_gets_everything_after_in_order(
    hooks: Stack, kafka_bootstrap: str
) -> None:
    receiver = Receiver()
    webhook_id, secret = await register(hooks, receiver.url("/down"))
    receiver.secrets["/down"] = secret
    hooks.start("webhooks", "webhooks")
    records = cloud_events(unique("down"), users=5, per_user=4)
    await publish(kafka_bootstrap, records)
    await asyncio.sleep(DOWN_SECONDS)  # every head of a user's chain retried, backing off
    up = time.monotonic()
    receiver.start()
    try:

        async def done() -> bool:
            rows = await deliveries(hooks, webhook_id)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        finished = await until("every delivery delivered", done, hooks, 60)
    finally:
        receiver.stop()
    rows = await deliveries(hooks, webhook_id)
    got = receiver.of("/down")
    twice = [i for i, n in Counter(r.event["id"] for r in got).items() if n > 1]
    assert all(r.verified for r in got)
    assert len(got) == len(records) and not twice
    assert in_order(records, receiver, "/down")
    retried = sum(r.attempts - 1 for r in rows)
    print(
        f"down {DOWN_SECONDS}s: {len(rows)} delivered after, {retried} failed tries before,"
        f" {len(twice)} duplicated, order kept, all in {finished - up:.1f}s once back"
    )


async def test_a_slow_endpoint_does_not_delay_another(hooks: Stack, kafka_bootstrap: str) -> None:
    receiver = Receiver(behaviour=lambda path, _s: (200, 5.0 if path == "/slow" else 0.0))
    receiver.start()
    try:
        slow_id, slow_secret = await register(hooks, receiver.url("/slow"))
        fast_id, fast_secret = await register(hooks, receiver.url("/fast"))
        receiver.secrets.update({"/slow": slow_secret, "/fast": fast_secret})
        hooks.start("webhooks", "webhooks")
        # Warm up (group joined) with one event, then measure.
        await publish(kafka_bootstrap, cloud_events(unique("warm"), 1, 1))
        await until("the warm-up event", lambda: receiver.of("/fast"), hooks, 60)
        records = cloud_events(unique("slow"), users=8, per_user=3)
        sent = time.monotonic()
        await publish(kafka_bootstrap, records)
        ids = {r.headers["id"] for r in records}

        def fast_done() -> bool:
            return len({r.event["id"] for r in receiver.of("/fast")} & ids) == len(ids)

        fast_at = await until("the fast endpoint's deliveries", fast_done, hooks, 30)
        slow_so_far = len({r.event["id"] for r in receiver.of("/slow")} & ids)
        slow_rows = [r for r in await deliveries(hooks, slow_id) if r.event_id in ids]
        assert fast_at - sent < 3.0, f"the fast endpoint took {fast_at - sent:.1f}s"
        assert sum(r.status == DELIVERED for r in slow_rows) < len(ids)
        assert in_order(records, receiver, "/fast")
        print(
            f"slow endpoint (5 s answers) beside a fast one: the fast one had all {len(ids)} in"
            f" {fast_at - sent:.2f}s, while the slow one had received {slow_so_far}"
        )
        assert fast_id != slow_id
    finally:
        hooks.stop()
        receiver.stop()


async def test_killed_mid_delivery_repeats_at_most_the_in_flight_with_the_same_id(
    hooks: Stack, kafka_bootstrap: str
) -> None:
    receiver = Receiver(behaviour=lambda _p, _s: (200, 0.4))
    receiver.start()
    try:
        webhook_id, secret = await register(hooks, receiver.url("/crash"))
        receiver.secrets["/crash"] = secret
        first = hooks.start("webhooks", "webhooks")
        records = cloud_events(unique("crash"), users=3, per_user=10)
        await publish(kafka_bootstrap, records)
        await until("a few deliveries", lambda: len(receiver.of("/crash")) >= 6, hooks, 60)
        while not receiver.open:
            await asyncio.sleep(0.01)
        with receiver.lock:
            in_flight = set(receiver.open)
            before = {r.webhook_id for r in receiver.received}
        first.popen.kill()
        first.popen.wait()
        hooks.start("webhooks-2", "webhooks")

        async def done() -> bool:
            rows = await deliveries(hooks, webhook_id)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        await until("every delivery delivered", done, hooks, 90)
    finally:
        receiver.stop()
    got = receiver.of("/crash")
    rows = {r.event_id: r.id for r in await deliveries(hooks, webhook_id)}
    ids_of: dict[str, set[str]] = defaultdict(set)
    for r in got:
        ids_of[r.event["id"]].add(r.webhook_id)
    repeated = [r for r, n in Counter(r.webhook_id for r in got).items() if n > 1]
    assert all(r.verified for r in got)
    assert all(ids == {rows[event]} for event, ids in ids_of.items())  # one webhook-id each
    assert set(ids_of) == set(rows)
    assert set(repeated) <= before and len(repeated) <= 3  # one chain per user: 3 in flight
    assert in_order(records, receiver, "/crash")
    print(
        f"SIGKILL mid-delivery: {len(rows)} delivered, {len(in_flight)} in flight at the kill,"
        f" {len(repeated)} repeated (same webhook-id), order kept"
    )
