"""Webhook deliveries a second (issue 16): `gatehouse webhooks` as deployed (its own consumer
group on Kafka's `user-events`, PostgreSQL) posting signed CloudEvents to a local receiver that
verifies each signature with `standardwebhooks` and answers 200 at once (keeping connections
alive, as a receiver in production would). `--events` events over `--users` users are published
at once to one endpoint (`--endpoints` for more); the rate is the deliveries over the span from
the first `delivered_at` to the last, so start-up and the group join do not count. The events are
of a type of the run's own (the topic is shared), and only they are counted. Also reported:
`dispatched_per_s` (events become delivery rows: first to last row written) and `repeated_posts`
(posts beyond one per delivery). Needs the services (`scripts/services start`) and their
GATEHOUSE_TEST_* variables.

    .venv/bin/python benchmarks/webhooks.py [--events 3000] [--users 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness
from tests.conftest import courier_group_at_end, service_env, unique
from tests.e2e.stack import Stack
from tests.integration.conftest import create_database, drop_database
from tests.integration.test_webhooks_faults import cloud_events, deliveries, publish, register
from tests.webhook_receiver import Receiver

from gatehouse import bootstrap
from gatehouse.domain import events
from gatehouse.outbox.kafka import ensure_topics


def received(receiver: Receiver, ids: set[str]) -> set[tuple[str, str]]:
    """(path, event id) of every verified post of this run's events."""
    with receiver.lock:
        return {
            (r.path, r.event["id"])
            for r in receiver.received
            if r.verified and r.event.get("id") in ids
        }


async def measure(args: argparse.Namespace, tmp: Path, database: str) -> dict[str, float]:
    kafka = service_env("KAFKA_BOOTSTRAP_SERVERS")
    stack = Stack.configure(tmp, database, "", kafka, "")
    group = unique("bench-webhooks")
    stack.env.update(
        GATEHOUSE_KAFKA_WEBHOOKS_GROUP=group,
        GATEHOUSE_WEBHOOK_ALLOW_PRIVATE="true",
        GATEHOUSE_WEBHOOK_CONCURRENCY=str(args.concurrency),
        GATEHOUSE_LOG_LEVEL="WARNING",
        GATEHOUSE_ENV="development",
    )
    ensure_topics(kafka, bootstrap.TOPICS, 3, 1)
    courier_group_at_end(kafka, group, events.USER_EVENTS)
    receiver = Receiver()
    receiver.start()
    try:
        ids_of = []
        for n in range(args.endpoints):
            webhook_id, secret = await register(stack, receiver.url(f"/bench{n}"))
            receiver.secrets[f"/bench{n}"] = secret
            ids_of.append(webhook_id)
        stack.start("webhooks", "webhooks")
        records = cloud_events(unique("bench"), args.users, args.events // args.users)
        ids = {r.headers["id"] for r in records}  # the topic is shared: count these only
        total = len(records) * args.endpoints
        await publish(kafka, records)
        deadline = time.monotonic() + 600
        while len(received(receiver, ids)) < total:  # cheap: the receiver's own record
            assert stack.roles["webhooks"].popen.poll() is None, stack.logs()
            assert time.monotonic() < deadline, stack.logs()[-4000:]
            await asyncio.sleep(0.2)
        while True:  # then the log, once every outcome is written
            rows = [r for w in ids_of for r in await deliveries(stack, w) if r.event_id in ids]
            done = [r.delivered_at for r in rows if r.delivered_at is not None]
            if len(done) == total:
                break
            assert time.monotonic() < deadline, stack.logs()[-4000:]
            await asyncio.sleep(0.2)
        span = (max(done) - min(done)).total_seconds()
        made = [r.created_at for r in rows]
        with receiver.lock:
            got = [r for r in receiver.received if r.event.get("id") in ids]
        return {
            "webhook_deliveries_per_s": round(total / span, 1),
            "deliveries": total,
            "seconds": round(span, 2),
            "verified": sum(r.verified for r in got),
            "dispatched_per_s": round(total / max((max(made) - min(made)).total_seconds(), 1e-3)),
            "repeated_posts": len(got) - len({(r.path, r.webhook_id) for r in got}),
        }
    finally:
        receiver.stop()
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database, admin = create_database("postgres", Path(tmp))
        try:
            result = asyncio.run(measure(args, Path(tmp), database))
        finally:
            drop_database(database, admin)
    result.update(vars(args))
    print(result)
    print(f"wrote {harness.write_result('webhooks', result)}")


if __name__ == "__main__":
    main()
