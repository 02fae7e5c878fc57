"""Webhooks on the real services: `gatehouse webhooks` (a process, its own consumer group on
Kafka's `user-events`, PostgreSQL) delivering to a receiver started here that verifies every
signature with `standardwebhooks`. An endpoint that answers 500 twice, one that is down for a
full minute while events keep coming (beside one that is up), one that is slow beside a fast
one, and the process SIGKILLed mid-delivery. Each test prints its figures: delivered, retried,
duplicated, order kept (`pytest -s` shows them).

The topic is shared with whatever else runs on the broker (other suites publish user events
too): the events here are of a type of this run's own (`KIND`), the only one the endpoints take,
and every count is of a test's own events."""

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
from tests.webhook_receiver import Received, Receiver

KIND = unique("gatehouse.test.webhooks")  # nothing else on the broker publishes this type
DOWN_SECONDS = 60  # the minute: the port refuses every connection all along
# Retries from 100 ms doubling up to 1 s: a minute down is some 60 tries per chain head, and the
# endpoint back is found within a second (production: 1 s doubling up to an hour).
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
        endpoint, secret = await registry.create(url, kinds or [KIND])
    finally:
        await engine.dispose()
    return endpoint.id, secret


async def deliveries(
    stack: Stack, webhook_id: str, records: list[Published] | None = None
) -> list[WebhookDelivery]:
    """The endpoint's delivery log, oldest first; of `records`' events only, when given."""
    engine = sql.create_engine(stack.env["GATEHOUSE_DATABASE_URL"])
    try:
        rows = await SqlWebhookStore(engine).deliveries(webhook_id, None, None, 100_000)
    finally:
        await engine.dispose()
    ids = None if records is None else {r.headers["id"] for r in records}
    return [r for r in reversed(rows) if ids is None or r.event_id in ids]


def got(receiver: Receiver, path: str, records: list[Published]) -> list[Received]:
    """What `path` received of `records`' events (retries and repeats included)."""
    ids = {r.headers["id"] for r in records}
    return [r for r in receiver.of(path) if r.event.get("id") in ids]


def cloud_events(
    run: str, users: int, per_user: int, first: int = 0, kind: str = KIND
) -> list[Published]:
    """`users` × `per_user` events of type `kind` (numbered from `first` for each user),
    interleaved across users, each keyed by its user."""
    made = []
    now = datetime.now(UTC)
    for n in range(first, first + per_user):
        for u in range(users):
            message = events.user_event(kind, f"{run}-user-{u}", {"n": n}, now)
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
            rows = await deliveries(hooks, webhook_id, records)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        await until("every delivery delivered", done, hooks, 90)
    finally:
        receiver.stop()
    rows = await deliveries(hooks, webhook_id, records)
    posts = got(receiver, "/flaky", records)
    per_id = Counter(r.webhook_id for r in posts)
    assert all(r.verified for r in posts)
    assert {r.attempts for r in rows} == {3}
    assert {r.id for r in rows} == set(per_id) and set(per_id.values()) == {3}
    assert {r.last_status_code for r in rows} == {200}
    assert in_order(records, receiver, "/flaky")
    print(
        f"500 twice then 200: {len(rows)} delivered, {sum(r.attempts - 1 for r in rows)} retries,"
        f" 0 duplicated (a 2xx answered once per webhook-id), order kept"
    )


async def test_a_receiver_down_for_a_minute_gets_everything_after_in_order(
    hooks: Stack, kafka_bootstrap: str
) -> None:
    """The receiver of /down is not listening for a full minute while events keep arriving for
    five users (a wave every 10 s); /live, on another receiver, gets each wave meanwhile. Once
    /down is back, it has every event, each once, in each user's order."""
    down, live = Receiver(), Receiver()
    went_down = time.monotonic()  # /down's port: nothing listens on it until `down.start()`
    live.start()
    try:
        down_id, down_secret = await register(hooks, down.url("/down"))
        live_id, live_secret = await register(hooks, live.url("/live"))
        down.secrets["/down"], live.secrets["/live"] = down_secret, live_secret
        hooks.start("webhooks", "webhooks")
        warm = cloud_events(unique("warm"), 1, 1)  # the consumer group joined: lags are ours
        await publish(kafka_bootstrap, warm)
        await until("the warm-up event", lambda: got(live, "/live", warm), hooks, 60)
        run, waves, records, tried, live_lag = unique("down"), 6, [], 0, 0.0
        for wave in range(waves):
            batch = cloud_events(run, users=5, per_user=2, first=2 * wave)
            records += batch
            sent = time.monotonic()
            await publish(kafka_bootstrap, batch)

            def live_has(batch: list[Published] = batch) -> bool:
                return {r.event["id"] for r in got(live, "/live", batch)} == {
                    r.headers["id"] for r in batch
                }

            live_lag = max(live_lag, await until("/live's wave", live_has, hooks, 30) - sent)
            await asyncio.sleep(max(0.0, went_down + (wave + 1) * DOWN_SECONDS / waves - sent))
            heads = [r for r in await deliveries(hooks, down_id, records) if r.attempts]
            tried = max(tried, sum(r.attempts for r in heads))
            assert all(r.status != DELIVERED for r in heads)
            assert all("Connect" in (r.last_error or "") for r in heads), heads[:1]
        assert not down.received and time.monotonic() - went_down >= DOWN_SECONDS
        down_for = time.monotonic() - went_down
        down.start()
        up = time.monotonic()

        async def done() -> bool:
            rows = await deliveries(hooks, down_id, records)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        finished = await until("every delivery delivered", done, hooks, 60)
    finally:
        down.stop()
        live.stop()
    rows = await deliveries(hooks, down_id, records)
    posts = got(down, "/down", records)
    twice = [i for i, n in Counter(r.webhook_id for r in posts).items() if n > 1]
    assert all(r.verified for r in posts)
    assert len(posts) == len(records) and not twice
    assert {r.event["id"] for r in posts} == {r.headers["id"] for r in records}
    assert in_order(records, down, "/down")
    retried = sum(r.attempts - 1 for r in rows)
    assert retried >= tried > 0 and max(r.attempts for r in rows) > 10
    live_posts = got(live, "/live", records)
    live_twice = len(live_posts) - len({r.webhook_id for r in live_posts})
    assert in_order(records, live, "/live") and live_twice == 0
    assert {r.status for r in await deliveries(hooks, live_id, records)} == {DELIVERED}
    print(
        f"down {down_for:.0f}s, {len(records)} events for 5 users in {waves} waves meanwhile:"
        f" {len(rows)} delivered after, {retried} retried (failed tries before), {len(twice)}"
        f" duplicated, order kept, all in {finished - up:.1f}s once back; the endpoint that"
        f" stayed up had each wave within {live_lag:.1f}s, 0 duplicated, order kept"
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
        await publish(kafka_bootstrap, records)
        sent = time.monotonic()  # on the broker (a producer's start is not the webhooks' time)
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
        await until(
            "a few deliveries", lambda: len(got(receiver, "/crash", records)) >= 6, hooks, 60
        )
        while not receiver.open:
            await asyncio.sleep(0.01)
        with receiver.lock:
            in_flight = set(receiver.open)
            before = {r.webhook_id for r in receiver.received}
        first.popen.kill()
        first.popen.wait()
        hooks.start("webhooks-2", "webhooks")

        async def done() -> bool:
            rows = await deliveries(hooks, webhook_id, records)
            return len(rows) == len(records) and all(r.status == DELIVERED for r in rows)

        await until("every delivery delivered", done, hooks, 90)
    finally:
        receiver.stop()
    posts = got(receiver, "/crash", records)
    rows = {r.event_id: r.id for r in await deliveries(hooks, webhook_id, records)}
    ids_of: dict[str, set[str]] = defaultdict(set)
    for r in posts:
        ids_of[r.event["id"]].add(r.webhook_id)
    repeated = [r for r, n in Counter(r.webhook_id for r in posts).items() if n > 1]
    assert all(r.verified for r in posts)
    assert all(ids == {rows[event]} for event, ids in ids_of.items())  # one webhook-id each
    assert set(ids_of) == set(rows)
    assert set(repeated) <= before and len(repeated) <= 3  # one chain per user: 3 in flight
    assert in_order(records, receiver, "/crash")
    print(
        f"SIGKILL mid-delivery: {len(rows)} delivered, {len(in_flight)} in flight at the kill,"
        f" {len(repeated)} repeated (same webhook-id), order kept"
    )
