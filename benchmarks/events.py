"""The event path (issue 6): register-to-email latency at a paced 50 registrations a second, and
the relay's publishing rate. Each role runs as its own process, as deployed: `gatehouse api`,
`gatehouse relay`, `gatehouse courier`, on PostgreSQL, Kafka and an SMTP sink.

register_to_email: an open-loop generator in this process sends POST /api/auth/register at a
fixed pace (request i leaves at start + i/50 s whatever the earlier ones are doing; unique
emails; rate limits off) and the SMTP sink here stamps each mail's arrival. The latency runs
from sending the request to the arrival of its verification mail: api (argon2id, SQL, outbox
row in the same transaction) -> `gatehouse relay` -> Kafka `send-otp` -> `gatehouse courier` ->
SMTP. The answer's 150 ms anti-enumeration floor is padding after the commit: it delays the
answer, not the mail. Where the time goes comes from the rows' own timestamps, all on this
machine's clock: the request's sending, the outbox row's `created_at` (stamped by the flow once
the password is hashed, before its transaction), the Kafka record's create time (the relay
produced it), the row's `published_at` (after Kafka acknowledged), the courier's delivery row
`created_at` (its claim) and the arrival at the sink. Each run is SECONDS of load after a
WARMUP_SECONDS warm-up; its p50 and p95 are over every mail of the run; the figures are the
medians of the runs'. CPU a registration is each process's user + system time over the run.

relay_events_per_s: EVENTS user events (keyed over 1,000 users, as `user-events` are) are
written through Gatehouse's own outbox adapter in one transaction while the relay polls an
empty outbox; the figure is EVENTS / (the last row's `published_at` - the commit), so neither
the relay's start-up nor the writing counts; median of the runs, after a warm-up batch.

    eval "$(scripts/services start | grep '^export ')"
    .venv/bin/python benchmarks/events.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

if __package__ in (None, ""):  # `python benchmarks/events.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from tests.conftest import end_offsets

from gatehouse.domain import events
from gatehouse.storage import sql
from gatehouse.storage.schema import deliveries, outbox
from gatehouse.storage.sql_outbox import SqlOutboxStore

RATE = 50.0  # registrations offered a second
SECONDS = 6.0  # of load in each measured run
WARMUP_SECONDS = 2.0
EVENTS = 20_000  # outbox rows in each relay run
WARMUP_EVENTS = 1_000
USERS = 1_000  # keys the relay's events spread over
PASSWORD = "correct horse battery staple"
# Stage: (from, to), the timestamps of one registration it runs between.
STAGES = {
    "api_hash_and_sql": ("sent", "outbox_row"),
    "relay_poll_and_claim": ("outbox_row", "produced"),
    "kafka_ack": ("produced", "published"),
    "kafka_to_courier": ("produced", "claimed"),
    "courier_render_and_smtp": ("claimed", "mailed"),
    "http_answer": ("sent", "answered"),
}


@dataclass
class Arrivals:
    """Wraps the sink's DATA hook: the wall-clock arrival of each mail, by recipient."""

    at: dict[str, float] = field(default_factory=dict)

    def install(self, sink: Any) -> None:
        original = sink.handle_DATA

        async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
            now = time.time()
            for rcpt in envelope.rcpt_tos:
                self.at.setdefault(rcpt, now)
            answer: str = await original(server, session, envelope)
            return answer

        # aiosmtpd looks its hooks up on the handler per connection: the instance's wins.
        sink.handle_DATA = handle_DATA


class Client:
    """A minimal HTTP/1.1 client over kept-alive connections: the load generator shares the two
    cores with the processes under test, so it must cost as little as it can (httpx spends a
    few milliseconds a request)."""

    def __init__(self, base: str):
        host, _, port = base.removeprefix("http://").partition(":")
        self._host, self._port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def post(self, path: str, body: bytes) -> int:
        request = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self._host.encode(), len(body), body)
        )
        while True:
            kept = bool(self._idle)
            if kept:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self._host, self._port)
                self._all.append(writer)
            try:
                writer.write(request)
                first = await reader.readline()
            except ConnectionError:
                first = b""
            if first:
                break
            writer.close()
            if not kept:  # a new connection closed unanswered: the server is gone
                raise ConnectionError("no answer")
            # The server closed a kept connection that idled past its keep-alive: again.
        status = int(first.split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and b"close" in value.lower():
                close = True
        await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status

    async def aclose(self) -> None:
        for writer in self._all:
            writer.close()


@dataclass
class Load:
    emails: list[str]
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, tuple[float, int]] = field(default_factory=dict)


async def offer(base: str, rate: float, seconds: float, tag: str) -> Load:
    """Open loop: request i leaves at start + i / rate whatever the earlier ones are doing."""
    load = Load(
        [f"ev-{tag}-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(int(rate * seconds))]
    )
    client = Client(base)

    async def one(email: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        body = json.dumps({"name": "Bench", "email": email, "password": PASSWORD}).encode()
        load.sent[email] = time.time()
        status = await client.post("/api/auth/register", body)
        load.answered[email] = (time.time(), status)

    try:
        start = time.monotonic() + 0.05
        await asyncio.gather(*(one(e, start + i / rate) for i, e in enumerate(load.emails)))
    finally:
        await client.aclose()
    return load


def _ts(value: datetime) -> float:
    return value.replace(tzinfo=value.tzinfo or UTC).timestamp()


def pct(samples: Sequence[float], p: float) -> float:
    return round(harness.percentile(samples, p), 1) if samples else float("nan")


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )


def produce_times(
    bootstrap: str, topic: str, start: dict[int, int], ids: set[str]
) -> dict[str, float]:
    """The Kafka create time (set by the relay's producer) of the records whose id header is in
    `ids`, read from the offsets in `start` to the end (the topic is shared: other records are
    passed over)."""
    end = end_offsets(bootstrap, topic)
    consumer = _consumer(bootstrap)
    found: dict[str, float] = {}
    try:
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in end])
        left = sum(end[p] - start.get(p, 0) for p in end)
        deadline = time.monotonic() + 30
        while left > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                left -= 1
                header = dict(msg.headers() or []).get("id")
                if isinstance(header, bytes) and header.decode() in ids:
                    found[header.decode()] = msg.timestamp()[1] / 1000
    finally:
        consumer.close()
    return found


async def wait_mails(arrivals: Arrivals, emails: Sequence[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(e not in arrivals.at for e in emails) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def timelines(
    bench: harness.Bench, engine: AsyncEngine, load: Load, arrivals: Arrivals, marks: dict[int, int]
) -> dict[str, dict[str, float]]:
    """Every timestamp of each registration (seconds since the epoch), by email."""
    times: dict[str, dict[str, float]] = {}
    for email in load.emails:
        times[email] = {"sent": load.sent[email]}
        if email in load.answered:
            times[email]["answered"] = load.answered[email][0]
        if email in arrivals.at:
            times[email]["mailed"] = arrivals.at[email]
    by_id: dict[str, str] = {}
    async with engine.connect() as conn:
        query = select(
            outbox.c.id, outbox.c.payload, outbox.c.created_at, outbox.c.published_at
        ).where(outbox.c.topic == events.SEND_OTP)
        for row in await conn.execute(query):
            to = json.loads(row.payload).get("to")
            if to in times:
                by_id[row.id] = to
                times[to]["outbox_row"] = _ts(row.created_at)
                if row.published_at is not None:
                    times[to]["published"] = _ts(row.published_at)
        claims = select(deliveries.c.id, deliveries.c.created_at).where(
            deliveries.c.id.in_(list(by_id))
        )
        for row in await conn.execute(claims):
            times[by_id[row.id]]["claimed"] = _ts(row.created_at)
    produced = await asyncio.to_thread(
        produce_times, bench.kafka, events.SEND_OTP, marks, set(by_id)
    )
    for message_id, at in produced.items():
        times[by_id[message_id]]["produced"] = at
    return times


async def register_run(
    bench: harness.Bench,
    api: str,
    engine: AsyncEngine,
    arrivals: Arrivals,
    tag: str,
    seconds: float,
) -> dict[str, Any]:
    marks = await asyncio.to_thread(end_offsets, bench.kafka, events.SEND_OTP)
    before = {n: harness.cpu_seconds(r.popen.pid) for n, r in bench.stack.roles.items()}
    load = await offer(api, RATE, seconds, tag)
    await wait_mails(arrivals, load.emails)
    after = {n: harness.cpu_seconds(r.popen.pid) for n, r in bench.stack.roles.items()}
    times = await timelines(bench, engine, load, arrivals, marks)
    total = [(t["mailed"] - t["sent"]) * 1000 for t in times.values() if "mailed" in t]
    stages: dict[str, dict[str, float]] = {}
    for stage, (start, end) in STAGES.items():
        spans = [(t[end] - t[start]) * 1000 for t in times.values() if start in t and end in t]
        stages[stage] = {"p50": pct(spans, 50), "p95": pct(spans, 95)}
    statuses: dict[str, int] = {}
    for _, status in load.answered.values():
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "offered": len(load.emails),
        "mailed": len(total),
        "statuses": statuses,
        "p50_ms": pct(total, 50),
        "p95_ms": pct(total, 95),
        "max_ms": round(max(total), 1) if total else float("nan"),
        "stages_ms": stages,
        # CPU each process spent a registration (the api's includes its argon2id hash).
        "cpu_ms_per_registration": {
            name: round((after[name] - before[name]) * 1000 / len(load.emails), 2) for name in after
        },
    }


async def relay_run(engine: AsyncEngine, count: int) -> dict[str, Any]:
    """`count` user events committed at once; how fast the running relay publishes them."""
    now = datetime.now(UTC)
    writing = time.monotonic()
    async with sql.SqlUnitOfWork(engine) as uow:
        for i in range(count):
            data = {"factor": "password", "n": i}
            await uow.outbox.add(events.user_event(events.LOGGED_IN, f"u-{i % USERS}", data, now))
        write_s = time.monotonic() - writing
        await uow.commit()
    committed = time.time()
    store = SqlOutboxStore(engine, lambda: datetime.now(UTC))
    deadline = time.monotonic() + 120
    while await store.pending_count() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    async with engine.connect() as conn:
        last, done = (
            await conn.execute(
                select(func.max(outbox.c.published_at), func.count()).where(
                    outbox.c.created_at == now, outbox.c.published_at.is_not(None)
                )
            )
        ).one()
    seconds = _ts(last) - committed
    return {
        "events": count,
        "published": int(done),
        "write_s": round(write_s, 2),
        "publish_s": round(seconds, 3),
        "per_s": round(count / seconds, 1),
    }


async def measure(bench: harness.Bench, runs: int) -> dict[str, Any]:
    arrivals = Arrivals()
    arrivals.install(bench.sink)
    bench.start("relay", "relay")
    bench.start("courier", "courier")
    api = bench.api().url
    engine = sql.create_engine(bench.database_url, pool_size=2)
    try:
        await register_run(bench, api, engine, arrivals, "warm", WARMUP_SECONDS)
        registers = [
            await register_run(bench, api, engine, arrivals, f"r{n}", SECONDS) for n in range(runs)
        ]
        await relay_run(engine, WARMUP_EVENTS)
        relays = [await relay_run(engine, EVENTS) for _ in range(runs)]
    finally:
        await engine.dispose()

    def median_of(*path: str) -> float:
        values = []
        for run in registers:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return harness.median(values)

    return {
        "register_to_email_p50_ms": median_of("p50_ms"),
        "register_to_email_p95_ms": median_of("p95_ms"),
        "relay_events_per_s": harness.median([r["per_s"] for r in relays]),
        "register_mails_lost": sum(r["offered"] - r["mailed"] for r in registers),
        "register_cpu_ms_api": median_of("cpu_ms_per_registration", "api"),
        "register_cpu_ms_relay": median_of("cpu_ms_per_registration", "relay"),
        "register_cpu_ms_courier": median_of("cpu_ms_per_registration", "courier"),
        "register_stages_ms": {
            stage: {
                "p50": median_of("stages_ms", stage, "p50"),
                "p95": median_of("stages_ms", stage, "p95"),
            }
            for stage in STAGES
        },
        "register_runs": registers,
        "relay_runs": relays,
    }


def run(bench: harness.Bench, runs: int = 3) -> dict[str, Any]:
    """The issue-6 event figures on a bench stack: medians over `runs`, warm-up excluded."""
    return asyncio.run(measure(bench, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    with harness.bench_stack() as bench:
        figures = run(bench, args.runs)
    result = {
        **figures,
        "method": {
            "rate_per_s": RATE,
            "seconds_per_run": SECONDS,
            "warmup_seconds": WARMUP_SECONDS,
            "relay_events_per_run": EVENTS,
            "runs": args.runs,
            "statistic": "median over the runs of each run's percentile",
            "stages": {stage: f"{a} -> {b}" for stage, (a, b) in STAGES.items()},
        },
        "machine": harness.machine(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    path = harness.write_result("events", result)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_runs")}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
