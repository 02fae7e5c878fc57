"""Load and soak: a mixed workload (register, verify, login, refresh, profile, jobs, logout) from
this process against `gatehouse serve` on the real services, for a bounded time with bounded
concurrency. Reports the error rate (429 excluded), throughput, and the server's memory and open
file descriptors over time, and writes benchmarks/results/soak.json.

    eval "$(scripts/services start | grep '^export ')"
    .venv/bin/python benchmarks/soak.py [--seconds 600] [--users 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from tests.conftest import courier_group_at_end
from tests.e2e.stack import own_redis_db

RESULTS = Path(__file__).parent / "results" / "soak.json"
PASSWORD = "correct horse battery staple"
CODE = re.compile(r"code is: (\d{6})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    """An SMTP server keeping the last code mailed to each address."""

    def __init__(self) -> None:
        self.codes: dict[str, list[str]] = {}

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content)
        payload = mail.get_payload(decode=True)
        body = payload.decode() if isinstance(payload, bytes) else str(mail.get_payload())
        found = CODE.search(body)
        if found:
            self.codes.setdefault(str(mail["To"]), []).append(found.group(1))
        return "250 OK"

    async def code(self, address: str, nth: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while len(self.codes.get(address, [])) < nth:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no code {nth} for {address}")
            await asyncio.sleep(0.02)
        return self.codes[address][nth - 1]


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, name: str, **kwargs: Any
    ) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            reply = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.statuses[f"{name} {type(exc).__name__}"] += 1
            return None
        self.latencies.append(time.perf_counter() - start)
        self.statuses[f"{name} {reply.status_code}"] += 1
        return reply


async def journey(client: httpx.AsyncClient, mail: Mailbox, tally: Tally) -> None:
    email = f"soak-{uuid.uuid4().hex[:16]}@example.com"
    reply = await tally.call(
        client,
        "POST",
        "/api/auth/register",
        "register",
        json={"name": "Soak", "email": email, "password": PASSWORD},
    )
    if reply is None or reply.status_code != 202:
        return
    try:
        code = await mail.code(email, 1)
    except TimeoutError:
        tally.statuses["mail timeout"] += 1
        return
    await tally.call(
        client, "POST", "/api/auth/verify-otp", "verify", json={"email": email, "otp": code}
    )
    reply = await tally.call(
        client, "POST", "/api/auth/login", "login", json={"email": email, "password": PASSWORD}
    )
    if reply is None or reply.status_code != 200:
        return
    data = reply.json()["data"]
    for _ in range(5):
        await tally.call(
            client,
            "GET",
            "/api/auth/profile",
            "profile",
            headers={"Authorization": f"Bearer {data['token']}"},
        )
    reply = await tally.call(
        client,
        "POST",
        "/api/auth/refresh",
        "refresh",
        json={"refresh_token": data["refresh_token"]},
    )
    if reply is None or reply.status_code != 200:
        return
    data = reply.json()["data"]
    reply = await tally.call(
        client, "POST", "/api/jobs/read-user", "job", json={"data": {"token": data["token"]}}
    )
    if reply is not None and reply.status_code == 202:
        job_id = reply.json()["data"]["job_id"]
        for _ in range(200):
            state = await client.get(f"/api/jobs/read-user/{job_id}")
            if state.status_code == 200 and state.json()["data"]["state"] in (
                "completed",
                "failed",
            ):
                result = state.json()["data"]["result"]
                outcome = "ok" if result["success"] else f"refused {result.get('code')}"
                tally.statuses[f"job result {outcome}"] += 1
                break
            await asyncio.sleep(0.05)
        else:
            tally.statuses["job timeout"] += 1
    await tally.call(
        client, "POST", "/api/auth/logout", "logout", json={"refresh_token": data["refresh_token"]}
    )


def sample(pid: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of a process."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def run(base: str, pid: int, mail: Mailbox, seconds: float, users: int) -> dict[str, Any]:
    tally = Tally()
    samples: list[tuple[float, float, int]] = []
    deadline = time.monotonic() + seconds
    start = time.monotonic()

    async def user() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while time.monotonic() < deadline:
                await journey(client, mail, tally)

    async def watch() -> None:
        while time.monotonic() < deadline:
            rss, fds = sample(pid)
            samples.append((time.monotonic() - start, rss, fds))
            await asyncio.sleep(10)

    await asyncio.gather(watch(), *(user() for _ in range(users)))
    total = sum(tally.statuses.values())
    errors = sum(
        n
        for key, n in tally.statuses.items()
        if not re.search(r" (2\d\d|429)$", key) and key != "job result ok"
    )
    first = [s for s in samples if s[0] < 60] or samples[:1]
    last = [s for s in samples if s[0] > seconds - 60] or samples[-1:]
    return {
        "seconds": round(time.monotonic() - start, 1),
        "users": users,
        "requests": total,
        "requests_per_s": round(total / seconds, 1),
        "errors_excluding_429": errors,
        "error_rate": round(errors / max(total, 1), 6),
        "statuses": dict(sorted(tally.statuses.items())),
        "latency_p50_ms": round(statistics.median(tally.latencies) * 1000, 1),
        "latency_p99_ms": round(statistics.quantiles(tally.latencies, n=100)[98] * 1000, 1),
        "rss_mb_first_minute": round(statistics.mean(s[1] for s in first), 1),
        "rss_mb_last_minute": round(statistics.mean(s[1] for s in last), 1),
        "fds_first_minute": max(s[2] for s in first),
        "fds_last_minute": max(s[2] for s in last),
        "samples": [(round(t), round(r, 1), f) for t, r, f in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--users", type=int, default=16)
    args = parser.parse_args()
    needed = ["POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"]
    missing = [n for n in needed if not os.environ.get(f"GATEHOUSE_TEST_{n}")]
    if missing:
        sys.exit(f"run `eval \"$(scripts/services start | grep '^export ')\"` first ({missing})")
    mail = Mailbox()
    smtp_port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    database = f"soak_{uuid.uuid4().hex[:8]}"
    admin = os.environ["GATEHOUSE_TEST_POSTGRES_URL"]
    psql = admin.replace("postgresql+asyncpg", "postgresql")
    subprocess.run(["psql", psql, "-qc", f"CREATE DATABASE {database}"], check=True)
    port = free_port()
    # A Redis database of its own, emptied when the soak ends: its keys (codes, the fixed job
    # queues) are neither mixed with other runs' in database 0 nor left behind.
    with (
        own_redis_db(os.environ["GATEHOUSE_TEST_REDIS_URL"]) as redis_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = {
            **os.environ,
            "GATEHOUSE_PORT": str(port),
            "GATEHOUSE_DATABASE_URL": admin.rsplit("/", 1)[0] + "/" + database,
            "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": os.environ[
                "GATEHOUSE_TEST_KAFKA_BOOTSTRAP_SERVERS"
            ],
            "GATEHOUSE_KAFKA_COURIER_GROUP": f"soak-{uuid.uuid4().hex[:8]}",
            "GATEHOUSE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "GATEHOUSE_SECRETS_FILE": f"{tmp}/secrets.json",
            # One client address drives every user: per-address limits would answer mostly 429.
            "GATEHOUSE_RATE_LIMITS": "{}",
        }
        courier_group_at_end(
            env["GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS"], env["GATEHOUSE_KAFKA_COURIER_GROUP"]
        )
        log = open(f"{tmp}/serve.log", "wb")  # noqa: SIM115 - closed after the server stops
        server = subprocess.Popen(
            [sys.executable, "-m", "gatehouse", "serve"],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            report = asyncio.run(run(base, server.pid, mail, args.seconds, args.users))
        finally:
            server.terminate()
            server.wait(30)
            log.close()
            controller.stop()
            subprocess.run(
                ["psql", psql, "-qc", f"DROP DATABASE IF EXISTS {database}"], check=False
            )
    result = {
        "soak": {k: v for k, v in report.items() if k != "samples"},
        "error_target": 0.001,
        "met": report["error_rate"] < 0.001,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "samples_t_rss_fds": report["samples"],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["soak"], indent=2))


if __name__ == "__main__":
    main()
