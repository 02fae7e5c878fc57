"""End to end: `gatehouse serve` as a subprocess on PostgreSQL, Redis, Kafka and an SMTP server;
register, read the mailed code, verify, log in, read the profile, then read the three events back
from Kafka with a separate consumer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import MailSink, body_of, courier_group_at_end, end_offsets, free_port, unique
from tests.e2e.stack import wait_ready

pytestmark = pytest.mark.e2e


def start_serve(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    log = (cwd / "serve.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "gatehouse", "serve"],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def high_watermarks(bootstrap: str, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p, end) for p, end in end_offsets(bootstrap, topic).items()]


def read_events(
    bootstrap: str, start: list[TopicPartition], subject: str, wanted: dict[str, int]
) -> list[dict[str, Any]]:
    """The CloudEvents keyed by `subject`, read until each type of `wanted` was seen as often."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("e2e-reader"),
            "enable.auto.commit": False,
        }
    )
    consumer.assign(start)
    found: list[dict[str, Any]] = []

    def missing() -> bool:
        return any(sum(e["type"] == t for e in found) < n for t, n in wanted.items())

    deadline = time.monotonic() + 30
    while missing() and time.monotonic() < deadline:
        for msg in consumer.consume(50, 0.5):
            if msg.error() is None and msg.key() == subject.encode():
                found.append(json.loads(msg.value()))
    consumer.close()
    return found


async def test_register_mail_verify_login_profile_and_events(
    postgres_database: str,
    redis_url: str,
    kafka_bootstrap: str,
    mail_sink: MailSink,
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "GATEHOUSE_DATABASE_URL": postgres_database,
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GATEHOUSE_SMTP_URL": mail_sink.url,
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "GATEHOUSE_KAFKA_COURIER_GROUP": unique("e2e-courier"),
    }
    courier_group_at_end(kafka_bootstrap, env["GATEHOUSE_KAFKA_COURIER_GROUP"])
    process = start_serve(env, tmp_path)
    try:
        wait_ready(base, process, tmp_path / "serve.log")
        marks = high_watermarks(kafka_bootstrap, "user-events")
        email = f"{unique('ada')}@example.com"
        password = "correct horse battery staple"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            reply = await client.post(
                "/api/auth/register", json={"name": "Ada", "email": email, "password": password}
            )
            assert reply.status_code == 202, reply.text
            assert reply.json()["status"] == "success"

            mail = (await mail_sink.wait_for(email))[0]
            match = re.search(r"code is: (\d{6})", body_of(mail))
            assert match, body_of(mail)
            code = match.group(1)

            wrong = "000000" if code != "000000" else "111111"
            reply = await client.post("/api/auth/verify-otp", json={"email": email, "otp": wrong})
            assert reply.status_code == 400 and reply.json()["code"] == "invalid_code"

            reply = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
            assert reply.status_code == 201, reply.text
            user = reply.json()["data"]["user"]
            assert user["email"] == email and user["email_verified"] is True

            reply = await client.post(
                "/api/auth/login", json={"email": email, "password": password}
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["message"] == "Logged in successfully"
            assert set(body["data"]) >= {"token", "refresh_token", "user"}

            reply = await client.get(
                "/api/auth/profile", headers={"Authorization": f"Bearer {body['data']['token']}"}
            )
            assert reply.status_code == 200
            assert reply.json()["data"]["user"]["id"] == user["id"]
            assert "password_hash" not in reply.text

        lifecycle = [
            "gatehouse.user.registered",
            "gatehouse.user.verified",
            "gatehouse.user.logged_in",
        ]
        received = read_events(
            kafka_bootstrap,
            marks,
            user["id"],
            {**dict.fromkeys(lifecycle, 1), "gatehouse.message.sent": 1},
        )
        # The courier's outcome (`gatehouse.message.sent`) shares the key; the user's own
        # lifecycle events are the three this flow produced, in this order.
        assert [e["type"] for e in received].count("gatehouse.message.sent") == 1
        cloud_events = [e for e in received if e["type"].startswith("gatehouse.user.")]
        print("\nuser-events read back from Kafka:")
        for event in cloud_events:
            print(json.dumps(event, indent=2))
        assert [e["type"] for e in cloud_events] == lifecycle
        for event in cloud_events:
            assert event["specversion"] == "1.0" and event["source"] == "gatehouse"
            assert event["subject"] == user["id"] and event["id"]
            assert password not in json.dumps(event) and code not in json.dumps(event)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    log = (tmp_path / "serve.log").read_text()
    assert returncode == 0, log
    assert password not in log
    assert "relay stopped" in log and "courier stopped" in log  # graceful shutdown
