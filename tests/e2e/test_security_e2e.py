"""Attacks on a running Gatehouse on PostgreSQL, Redis, Kafka and SMTP: 50 simultaneous
submissions of the right code, and known secrets planted through every flow then searched for in
the logs, both Kafka topics, every Redis key and value, every database column, `/metrics` and
every span exported (it traces, to a receiver of the test's)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from redis.asyncio import Redis
from sqlalchemy import text

from gatehouse.domain.crypto import generate_secrets_document
from gatehouse.storage import sql
from gatehouse.storage.schema import metadata
from tests.conftest import MailSink, body_of, courier_group_at_end, free_port, unique
from tests.e2e.stack import wait_ready
from tests.e2e.test_serve_e2e import high_watermarks, start_serve
from tests.otlp_sink import OtlpSink, otlp_sink

pytestmark = pytest.mark.e2e
CODE = re.compile(r"code is: (\d{6})")
PASSWORD = "Planted-Secret-Passw0rd-7731"
PHONE = "+14155557731"


@dataclass
class Running:
    base: str
    database_url: str
    redis_url: str  # a database of its own: every key in it is this run's
    log: Path
    marks: dict[str, list[TopicPartition]]
    process: subprocess.Popen[bytes]
    spans: OtlpSink


@pytest.fixture
async def running(
    postgres_database: str,
    own_redis: str,
    kafka_bootstrap: str,
    mail_sink: MailSink,
    tmp_path: Path,
) -> AsyncIterator[Running]:
    with otlp_sink() as spans:
        async for running in _running(
            postgres_database, own_redis, kafka_bootstrap, mail_sink, tmp_path, spans
        ):
            yield running


async def _running(
    postgres_database: str,
    own_redis: str,
    kafka_bootstrap: str,
    mail_sink: MailSink,
    tmp_path: Path,
    spans: OtlpSink,
) -> AsyncIterator[Running]:
    port = free_port()
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps(generate_secrets_document()))
    env = {
        "GATEHOUSE_ENV": "production",  # no console channel: nothing prints codes on purpose
        "GATEHOUSE_DATABASE_URL": postgres_database,
        "GATEHOUSE_REDIS_URL": own_redis,
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GATEHOUSE_SMTP_URL": mail_sink.url,
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_SECRETS_FILE": str(secrets),
        "GATEHOUSE_KAFKA_COURIER_GROUP": unique("sec-courier"),
        "GATEHOUSE_RATE_LIMITS": "{}",
        "GATEHOUSE_LOG_JSON": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": spans.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    # Production does not migrate on start: the release step does, as here.
    subprocess.run(
        [sys.executable, "-m", "gatehouse", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    marks = {t: high_watermarks(kafka_bootstrap, t) for t in ("send-otp", "user-events")}
    courier_group_at_end(kafka_bootstrap, env["GATEHOUSE_KAFKA_COURIER_GROUP"])
    process = start_serve(env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, tmp_path / "serve.log")
        log = tmp_path / "serve.log"
        yield Running(base, postgres_database, own_redis, log, marks, process, spans)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def code_for(sink: MailSink, email: str, nth: int = 1) -> str:
    mails = await sink.wait_for(email, nth)
    match = CODE.search(body_of(mails[nth - 1]))
    assert match, body_of(mails[nth - 1])
    return match.group(1)


async def test_fifty_simultaneous_right_codes_create_one_user(
    running: Running, mail_sink: MailSink
) -> None:
    email = f"{unique('race')}@example.com"
    async with httpx.AsyncClient(base_url=running.base, timeout=60) as client:
        reply = await client.post(
            "/api/auth/register", json={"name": "Race", "email": email, "password": PASSWORD}
        )
        assert reply.status_code == 202
        code = await code_for(mail_sink, email)
        replies = await asyncio.gather(
            *(
                client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
                for _ in range(50)
            )
        )
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(400) == 49, statuses
    engine = sql.create_engine(running.database_url)
    async with engine.connect() as conn:
        count = (
            await conn.execute(text("SELECT count(*) FROM users WHERE email = :e"), {"e": email})
        ).scalar_one()
    await engine.dispose()
    assert count == 1


def kafka_values(bootstrap: str, marks: list[TopicPartition]) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("scan"), "enable.auto.commit": False}
    )
    ends = {
        m.partition: consumer.get_watermark_offsets(TopicPartition(m.topic, m.partition))[1]
        for m in marks
    }
    consumer.assign(marks)
    found: list[bytes] = []
    positions = {m.partition: m.offset for m in marks}
    deadline = time.monotonic() + 20
    while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for msg in consumer.consume(200, 0.5):
            if msg.error() is None:
                found.append((msg.key() or b"") + b" " + (msg.value() or b""))
                positions[msg.partition()] = msg.offset() + 1
    consumer.close()
    return found


async def redis_dump(redis_url: str) -> list[bytes]:
    client = Redis.from_url(redis_url)
    dump: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        dump.append(key)
        kind = (await client.type(key)).decode()
        if kind == "string":
            dump.append(await client.get(key) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                dump.extend([field, value])
        elif kind == "list":
            dump.extend(await client.lrange(key, 0, -1))
        elif kind == "set":
            dump.extend(await client.smembers(key))
        elif kind == "zset":
            dump.extend(await client.zrange(key, 0, -1))
        elif kind == "stream":
            for _id, fields in await client.xrange(key, count=10000):
                for field, value in fields.items():
                    dump.extend([field, value])
    await client.aclose()
    return dump


async def database_dump(url: str) -> list[str]:
    engine = sql.create_engine(url)
    rows: list[str] = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(table.select()):
                rows.extend(str(value) for value in row)
    await engine.dispose()
    return rows


async def test_planted_secrets_appear_nowhere(
    running: Running, mail_sink: MailSink, kafka_bootstrap: str
) -> None:
    email = f"{unique('plant')}@example.com"
    secrets: list[str] = [PASSWORD, PHONE, PHONE.lstrip("+"), "NewPlanted-Passw0rd-9921"]
    async with httpx.AsyncClient(base_url=running.base, timeout=30) as client:

        async def ok(method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
            reply = await client.request(method, path, **kwargs)
            assert reply.status_code == status, reply.text
            return reply.json()

        await ok(
            "POST",
            "/api/auth/register",
            202,
            json={"name": "Plant", "email": email, "password": PASSWORD, "phone": PHONE},
        )
        code = await code_for(mail_sink, email)
        await ok("POST", "/api/auth/verify-otp", 201, json={"email": email, "otp": code})
        login = await ok(
            "POST", "/api/auth/login", 200, json={"email": email, "password": PASSWORD}
        )
        token, refresh = login["data"]["token"], login["data"]["refresh_token"]
        refreshed = await ok("POST", "/api/auth/refresh", 200, json={"refresh_token": refresh})
        auth = {"Authorization": f"Bearer {refreshed['data']['token']}"}
        profile = await ok("GET", "/api/auth/profile", 200, headers=auth)
        assert profile["data"]["user"]["phone"] == PHONE  # the owner sees it; nothing else does
        await ok("POST", "/api/auth/password/forgot", 202, json={"email": email})
        reset_code = await code_for(mail_sink, email, 2)
        await ok(
            "POST",
            "/api/auth/password/reset",
            200,
            json={"email": email, "otp": reset_code, "new_password": secrets[3]},
        )
        # The old password, after the reset (which clears failed logins): a counter in Redis.
        await ok("POST", "/api/auth/login", 401, json={"email": email, "password": PASSWORD})
        secrets += [
            code,
            reset_code,
            token,
            refresh,
            refreshed["data"]["token"],
            refreshed["data"]["refresh_token"],
        ]
    await asyncio.sleep(1.5)  # let the relay publish the last rows
    async with httpx.AsyncClient(base_url=running.base, timeout=10) as client:
        metrics = (await client.get("/metrics")).text

    running.process.send_signal(signal.SIGTERM)
    running.process.wait(timeout=30)  # its last spans are sent as it stops
    with running.spans.lock:
        exported = [body.decode(errors="replace") for body in running.spans.bodies]
    assert {"POST /api/auth/register", "send email"} <= {s.name for s in running.spans.spans}
    assert 'route="/api/auth/password/reset"' in metrics
    places: dict[str, list[str]] = {
        "logs": [running.log.read_text()],
        "metrics": [metrics],
        "traces": exported,
        "kafka": [
            v.decode(errors="replace")
            for t in running.marks.values()
            for v in kafka_values(kafka_bootstrap, t)
        ],
        "redis": [v.decode(errors="replace") for v in await redis_dump(running.redis_url)],
        "database": await database_dump(running.database_url),
    }
    assert any(email in v for v in places["kafka"])  # the scan does read what was written
    # The run's own failed login (the database is the run's alone): the scan reads its keys.
    assert any(v.startswith("gatehouse:fail:") for v in places["redis"]), places["redis"]
    assert len(places["database"]) > 10
    for where, values in places.items():
        blob = "\n".join(values)
        for secret in secrets:
            # Whole words: a 6-digit code may occur by chance inside a hex message id.
            found = re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", blob)
            assert found is None, f"a planted secret ({secret[:4]}…) was found in {where}"
