"""What every fault test ends with: the database, the outbox, the Kafka topics, the SMTP server and
the job queues read back and held to the invariants of issue 5 (each state change has exactly one
outbox row, every outbox row reached Kafka, one email per message id, every job final, no user
half-created), plus the small drivers the tests share (sign-ups, waits)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import select

from gatehouse.domain import events
from gatehouse.storage import sql
from gatehouse.storage.schema import deliveries, outbox, pending_registrations, users
from tests.conftest import MailSink, body_of, unique

PASSWORD = "correct horse battery staple"
CODE = re.compile(r"code is: (\d{6})")
SENT_OR_ABANDONED = (events.MESSAGE_SENT, events.MESSAGE_ABANDONED)


@dataclass
class Snapshot:
    """The service database as the invariants need it."""

    users: dict[str, str]  # id -> email
    pending: dict[str, str]  # id -> email
    outbox: list[dict[str, Any]]
    deliveries: dict[str, str]  # message id -> status

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.outbox if r["payload"].get("type") == kind]

    @property
    def send_otp(self) -> list[dict[str, Any]]:
        return [r for r in self.outbox if r["topic"] == events.SEND_OTP]

    @property
    def unpublished(self) -> int:
        return sum(r["published_at"] is None for r in self.outbox)


async def snapshot(database_url: str) -> Snapshot:
    engine = sql.create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found_users = {r.id: r.email for r in await conn.execute(select(users))}
            found_pending = {
                r.id: r.email for r in await conn.execute(select(pending_registrations))
            }
            rows = [
                {
                    "id": r.id,
                    "topic": r.topic,
                    "key": r.message_key,
                    "payload": json.loads(r.payload),
                    "published_at": r.published_at,
                }
                for r in await conn.execute(select(outbox).order_by(outbox.c.seq))
            ]
            records = {r.id: r.status for r in await conn.execute(select(deliveries))}
    finally:
        await engine.dispose()
    return Snapshot(found_users, found_pending, rows, records)


def half_written(snap: Snapshot) -> list[str]:
    """Every way a sign-up could be left half done, as readable problems (empty: none).

    A registration writes the pending row, one `send-otp` command and one `registered` event in
    one transaction (registering again while pending writes one more command and no event); a
    verification writes the user, one `verified` event and deletes the pending row in one
    transaction; the courier writes one outcome event per message. (For sign-ups by register
    and verify-otp: a `create-user` job writes no `send-otp` command.)"""
    problems: list[str] = []
    registered = Counter(r["key"] for r in snap.of_type(events.REGISTERED))
    codes = Counter(r["key"] for r in snap.send_otp if r["payload"]["template"] == "verify-email")
    verified = Counter(r["key"] for r in snap.of_type(events.VERIFIED))
    both = set(snap.users.values()) & set(snap.pending.values())
    if both:
        problems.append(f"{len(both)} emails are both a user and pending, e.g. {sorted(both)[:3]}")
    for user_id in snap.users:
        if verified[user_id] != 1:
            problems.append(f"user {user_id} has {verified[user_id]} verified events")
    for user_id in verified:
        if user_id not in snap.users:
            problems.append(f"verified event for {user_id}, which is not a user")
    for subject_id in {*snap.users, *snap.pending}:
        # One `registered` event per sign-up; a sign-up registered again while pending (a client
        # retrying a 503 whose transaction had committed) gets a fresh code of its own and no
        # second event, so there are at least as many codes as events, never fewer.
        if registered[subject_id] != 1 or codes[subject_id] < 1:
            problems.append(
                f"{subject_id}: {registered[subject_id]} registered events and "
                f"{codes[subject_id]} send-otp commands (one event, one code or more per sign-up)"
            )
    for key in {*registered, *codes} - {*snap.users, *snap.pending}:
        problems.append(f"registration rows for {key}, which is neither pending nor a user")
    outcomes = Counter(
        r["payload"]["data"]["message_id"]
        for r in snap.outbox
        if r["payload"].get("type") in SENT_OR_ABANDONED
    )
    for row in snap.send_otp:
        status = snap.deliveries.get(row["id"])
        if status not in ("sent", "abandoned") or outcomes[row["id"]] != 1:
            problems.append(
                f"message {row['id']}: delivery {status}, {outcomes[row['id']]} outcome events"
            )
    return problems


def topic_ids(bootstrap: str, topics: list[str]) -> Counter[str]:
    """How often each record id (the `id` header the relay sets) is in the topics, read from the
    start to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("chaos-reader"),
            "enable.auto.commit": False,
        }
    )
    try:
        wanted: dict[tuple[str, int], int] = {}
        starts: list[TopicPartition] = []
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    wanted[(topic, p)] = high
                    starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        while wanted:
            assert time.monotonic() < deadline, f"topics not read to the end: {wanted}"
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                seen[dict(msg.headers() or [])["id"].decode()] += 1
                where = (msg.topic(), msg.partition())
                if where in wanted and msg.offset() + 1 >= wanted[where]:
                    del wanted[where]
        return seen
    finally:
        consumer.close()


def consumed_to_the_end(bootstrap: str, group: str, topic: str) -> bool:
    """The group's committed offsets have reached the end of every partition of the topic."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        for tp in committed:
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def unfinished_jobs(redis_url: str) -> dict[str, int]:
    """BullMQ jobs not in a final state (waiting, active, delayed, prioritized, paused)."""
    unfinished: dict[str, int] = {}
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter("bull:*"):
            name = key.decode()
            state = name.rsplit(":", 1)[-1]
            if state not in ("wait", "active", "delayed", "prioritized", "paused"):
                continue
            kind = client.type(key).decode()
            size = (
                client.llen(key) if kind == "list" else client.zcard(key) if kind == "zset" else 0
            )
            if size:
                unfinished[name] = size
    return unfinished


def mail_ids(sink: MailSink, addresses: set[str]) -> Counter[str]:
    """How often each message id (header X-Gatehouse-Message-Id) reached the SMTP server, for
    mail to these addresses."""
    return Counter(m["X-Gatehouse-Message-Id"] for m in list(sink.messages) if m["To"] in addresses)


def codes_by_address(sink: MailSink, addresses: set[str]) -> dict[str, str]:
    """The newest code mailed to each address."""
    found: dict[str, str] = {}
    for message in list(sink.messages):
        if message["To"] in addresses and (match := CODE.search(body_of(message))):
            found[message["To"]] = match.group(1)
    return found


@dataclass
class Calls:
    """HTTP answers by status, with the bodies of the unexpected ones."""

    statuses: Counter[int] = field(default_factory=Counter)
    samples: dict[int, str] = field(default_factory=dict)

    def add(self, reply: httpx.Response) -> int:
        self.statuses[reply.status_code] += 1
        self.samples.setdefault(reply.status_code, reply.text[:300])
        return reply.status_code


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(j) for j in jobs))


async def register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        "/api/auth/register", json={"name": "Chaos Tester", "email": email, "password": PASSWORD}
    )


async def wait_until(
    what: str, check: Callable[[], Awaitable[bool]], deadline: float, every: float = 0.2
) -> float:
    """Polls `check` until true; fails at `deadline` (a time.monotonic() value). Returns when."""
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic()
