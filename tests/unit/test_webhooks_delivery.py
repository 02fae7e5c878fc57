"""The webhooks' dispatcher and delivery loop in-process, on SQLite and a receiver on loopback
(`tests/webhook_receiver.py`, verifying every signature): events become one delivery per
endpoint that wants them, written a batch at a time and acknowledged in order; the loop posts
each user's deliveries in order, retries a refusal, keeps an endpoint within its concurrency,
lets no slow endpoint delay another, sees an endpoint's change or pause at once, keeps the
outcomes while the database is away (nothing posted twice), and on stop lets the posts in flight
finish and be recorded."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatehouse.domain.crypto import generate_secrets_document, parse_secrets
from gatehouse.domain.webhooks import DELIVERED, PENDING
from gatehouse.errors import Unavailable
from gatehouse.ports import Delivery
from gatehouse.ports.webhooks import Attempt
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.sql_webhooks import SqlWebhookStore
from gatehouse.webhooks.delivery import WebhookDeliverer
from gatehouse.webhooks.dispatch import Dispatcher
from gatehouse.webhooks.httpx_client import HttpxWebhookClient
from gatehouse.webhooks.registry import Registry
from tests.webhook_receiver import Receiver

KEYRING = parse_secrets(generate_secrets_document()).keyring()


def clock() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlWebhookStore]:
    engine = sql.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await upgrade(engine, "head")
    yield SqlWebhookStore(engine)
    await engine.dispose()


def registry(store: SqlWebhookStore) -> Registry:
    return Registry(store, HttpxWebhookClient(), KEYRING, clock, allow_private=True)


def event(n: int, user: str, kind: str = "gatehouse.user.logged_in") -> bytes:
    return json.dumps({"id": f"ev-{user}-{n}", "type": kind, "subject": user, "n": n}).encode()


class Source:
    """A `DeliverySource` over a list: what was acknowledged, in order."""

    def __init__(self, values: list[bytes]):
        self.values = values
        self.acked: list[int] = []

    async def deliveries(self) -> AsyncIterator[Delivery]:
        for offset, value in enumerate(self.values):

            async def ack(offset: int = offset) -> None:
                self.acked.append(offset)

            yield Delivery(value, ack, None, "user-events", 0, offset)
        await asyncio.Event().wait()  # a topic has no end

    async def close(self) -> None:
        return None


async def dispatched(store: SqlWebhookStore, values: list[bytes]) -> Source:
    """Everything of `values` through a running dispatcher (and acknowledged)."""
    source = Source(values)
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(source, store, clock).run(stop))
    deadline = time.monotonic() + 10
    while len(source.acked) < len(values):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    stop.set()
    await task
    return source


async def test_events_become_one_delivery_per_wanting_endpoint_acknowledged_in_order(
    store: SqlWebhookStore,
) -> None:
    everything, _ = await registry(store).create("http://a.test/", ["*"])
    messages, _ = await registry(store).create("http://b.test/", ["gatehouse.message.*"])
    values = [
        event(1, "ada"),
        b"not a cloud event",
        event(2, "ada", "gatehouse.message.sent"),
        event(3, "bob"),
    ]
    source = await dispatched(store, values)
    assert source.acked == [0, 1, 2, 3]
    to_all = await store.deliveries(everything.id, None, None, 10)
    assert [(r.event_id, r.user_key, r.status) for r in reversed(to_all)] == [
        ("ev-ada-1", "ada", PENDING),
        ("ev-ada-2", "ada", PENDING),
        ("ev-bob-3", "bob", PENDING),
    ]
    assert [r.event_id for r in await store.deliveries(messages.id, None, None, 10)] == ["ev-ada-2"]
    assert json.loads(to_all[-1].body)["n"] == 1
    # Read again (a consumer restarted before its commit): nothing twice.
    await dispatched(store, values)
    assert len(await store.deliveries(everything.id, None, None, 10)) == 3


async def run_until(deliverer: WebhookDeliverer, done: object, timeout: float = 20) -> None:
    """Run the loop until `done()` holds, then stop it (as SIGTERM would)."""
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while not await done():  # type: ignore[operator]
            assert time.monotonic() < deadline, dict(deliverer.outcomes)
            assert not task.done(), task
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


class Recording(HttpxWebhookClient):
    """The real client, each attempt's answer kept by webhook-id: a post that met no answer
    (a kept-alive connection reset on a loaded host) is a true retry, and is told apart from
    a delivery posted once too often."""

    def __init__(self) -> None:
        super().__init__(5, allow_private=True)
        self.answers: dict[str, list[int | None]] = defaultdict(list)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        attempt = await super().post(url, body, headers)
        self.answers[headers["webhook-id"]].append(attempt.status_code)
        return attempt


async def test_each_users_deliveries_go_in_order_retried_within_the_endpoints_limit(
    store: SqlWebhookStore,
) -> None:
    most = [0]

    def behaviour(_path: str, seen: int) -> tuple[int, float]:
        most[0] = max(most[0], len(receiver.open))
        return (500 if seen == 0 else 200, 0.02)

    receiver = Receiver(behaviour=behaviour)
    receiver.start()
    client = Recording()
    try:
        endpoint, secret = await registry(store).create(receiver.url("/in"), ["*"])
        receiver.secrets["/in"] = secret
        users = ["ada", "bob", "cy", "dee"]
        await dispatched(store, [event(n, u) for n in range(5) for u in users])
        deliverer = WebhookDeliverer(
            store, client, KEYRING, clock, backoff_base=0.01, backoff_cap=0.05, concurrency=2
        )

        async def done() -> bool:
            rows = await store.deliveries(endpoint.id, None, None, 100)
            return all(r.status == DELIVERED for r in rows)

        await run_until(deliverer, done)
    finally:
        receiver.stop()
        await client.aclose()
    rows = await store.deliveries(endpoint.id, None, None, 100)
    # Each was answered 500 once, then 200 once, and not posted again; a post with no answer
    # at all is the only other retry allowed (counted in the log as the attempt it was).
    answered = {i: [a for a in got if a is not None] for i, got in client.answers.items()}
    assert len(rows) == 20 and answered == {r.id: [500, 200] for r in rows}
    assert {r.id: r.attempts for r in rows} == {i: len(a) for i, a in client.answers.items()}
    assert {r.last_status_code for r in rows} == {200} and all(r.delivered_at for r in rows)
    assert all(r.verified for r in receiver.received)
    per_id = Counter(r.webhook_id for r in receiver.received)
    assert set(per_id) == {r.id for r in rows} and set(per_id.values()) == {2}
    order: dict[str, list[int]] = defaultdict(list)
    for got in receiver.received:  # a user's next is posted only once the last is delivered
        if not order[got.event["subject"]] or order[got.event["subject"]][-1] != got.event["n"]:
            order[got.event["subject"]].append(got.event["n"])
    assert order == {u: [0, 1, 2, 3, 4] for u in users}
    assert 1 <= most[0] <= 2
    unanswered = sum(len(a) for a in client.answers.values()) - 40
    assert deliverer.outcomes == Counter(delivered=20, retried=20 + unanswered)


async def test_a_slow_endpoint_delays_no_other_and_changes_are_seen_at_once(
    store: SqlWebhookStore,
) -> None:
    receiver = Receiver(behaviour=lambda path, _s: (200, 3.0 if path == "/slow" else 0.0))
    receiver.start()
    client = HttpxWebhookClient(5, allow_private=True)
    reg = registry(store)
    try:
        slow, slow_secret = await reg.create(receiver.url("/slow"), ["*"])
        fast, fast_secret = await reg.create(receiver.url("/fast"), ["*"])
        receiver.secrets.update({"/slow": slow_secret, "/fast": fast_secret, "/moved": fast_secret})
        await dispatched(store, [event(n, f"user{n}") for n in range(6)])
        deliverer = WebhookDeliverer(store, client, KEYRING, clock, concurrency=2, poll=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(deliverer.run(stop))
        started = time.monotonic()
        while len(receiver.of("/fast")) < 6:
            await asyncio.sleep(0.01)
        fast_took = time.monotonic() - started
        assert fast_took < 2.5 and len(receiver.of("/slow")) == 2  # its 2 slots, still busy

        # Paused: nothing more goes; moved and resumed: the next ones go to the new URL.
        await reg.update(fast.id, paused=True)
        await dispatched(store, [event(9, "zed")])
        await asyncio.sleep(0.3)
        assert [r.event["n"] for r in receiver.of("/fast")].count(9) == 0
        await reg.update(fast.id, paused=False, url=receiver.url("/moved"))
        while not receiver.of("/moved"):
            await asyncio.sleep(0.01)
        stop.set()
        await task  # the slow posts in flight finish and are recorded
    finally:
        receiver.stop()
        await client.aclose()
    assert [r.event["n"] for r in receiver.of("/moved")] == [9]
    assert all(r.verified for r in receiver.received)
    slow_rows = await store.deliveries(slow.id, None, None, 10)
    posted = {r.webhook_id for r in receiver.of("/slow")}
    assert {r.id for r in slow_rows if r.status == DELIVERED} == posted
    assert all(r.lease_owner is None for r in slow_rows)  # nothing left leased by a clean stop
    print(f"fast endpoint: 6 in {fast_took:.2f}s while the slow one (3 s answers) had 2")


class Flaky:
    """The store, away (`Unavailable`) for the first `times` rounds that have outcomes."""

    def __init__(self, store: SqlWebhookStore, times: int):
        self.store, self.times, self.refused = store, times, 0

    async def settle_and_claim(self, owner: str, outcomes: Any, *args: Any) -> Any:
        if outcomes and self.refused < self.times:
            self.refused += 1
            raise Unavailable("Database unavailable")
        return await self.store.settle_and_claim(owner, outcomes, *args)

    async def release(self, delivery_id: str, owner: str) -> None:
        await self.store.release(delivery_id, owner)


async def test_outcomes_wait_for_the_database_and_nothing_is_posted_twice(
    store: SqlWebhookStore,
) -> None:
    receiver = Receiver()
    receiver.start()
    client = HttpxWebhookClient(5, allow_private=True)
    try:
        endpoint, secret = await registry(store).create(receiver.url("/in"), ["*"])
        receiver.secrets["/in"] = secret
        await dispatched(store, [event(n, u) for n in range(3) for u in ("ada", "bob")])
        flaky = Flaky(store, times=3)
        deliverer = WebhookDeliverer(flaky, client, KEYRING, clock, concurrency=2)

        async def done() -> bool:
            rows = await store.deliveries(endpoint.id, None, None, 100)
            return all(r.status == DELIVERED for r in rows)

        await run_until(deliverer, done)
    finally:
        receiver.stop()
        await client.aclose()
    assert flaky.refused == 3
    per_id = Counter(r.webhook_id for r in receiver.received)
    assert len(per_id) == 6 and set(per_id.values()) == {1}
    rows = await store.deliveries(endpoint.id, None, None, 100)
    assert {r.attempts for r in rows} == {1} and all(r.lease_owner is None for r in rows)
