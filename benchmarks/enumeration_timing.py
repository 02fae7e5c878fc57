"""Account enumeration by timing: register, login and forgot-password must answer as fast for
an existing account as for an unknown one. Sends N interleaved pairs (existing, unknown) to a
`gatehouse serve` started here on loopback, with real argon2id parameters, and reports the
median of each side and their difference (target: at most 10 ms).

    .venv/bin/python benchmarks/enumeration_timing.py [--samples 1000]
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
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results" / "enumeration_timing.json"
PASSWORD = "correct horse battery staple"
CODE = re.compile(rb"code is: (\d{6})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def timed(client: httpx.AsyncClient, path: str, body: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    reply = await client.post(path, json=body)
    return (time.perf_counter() - start) * 1000, reply.status_code


async def make_accounts(client: httpx.AsyncClient, log: Path, count: int) -> list[str]:
    emails = [f"known{i}@example.com" for i in range(count)]
    for email in emails:
        await client.post(
            "/api/auth/register", json={"name": "K", "email": email, "password": PASSWORD}
        )
    await asyncio.sleep(1)  # the embedded courier prints every code
    text = await asyncio.to_thread(log.read_bytes)
    for email in emails:
        block = text[text.rindex(f"to {email}".encode()) :]
        code = CODE.search(block)
        assert code, email
        reply = await client.post(
            "/api/auth/verify-otp", json={"email": email, "otp": code.group(1).decode()}
        )
        assert reply.status_code == 201, reply.text
    return emails


async def measure(base: str, log: Path, samples: int) -> dict[str, dict[str, float]]:
    accounts = max(1, samples // 5)  # five failed logins each stays under the throttle
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        known = await make_accounts(client, log, accounts)
        cases = {
            "register": lambda i, email: (
                "/api/auth/register",
                {"name": "X", "email": email, "password": PASSWORD},
            ),
            "login": lambda i, email: (
                "/api/auth/login",
                {"email": email, "password": f"wrong password {i}"},
            ),
            "forgot": lambda i, email: ("/api/auth/password/forgot", {"email": email}),
        }
        report: dict[str, dict[str, float]] = {}
        for name, make in cases.items():
            existing: list[float] = []
            unknown: list[float] = []
            statuses: set[tuple[int, int]] = set()
            for i in range(samples):
                path, body = make(i, known[i % accounts])
                a, status_a = await timed(client, path, body)
                path, body = make(i, f"nobody-{name}-{i}@example.com")
                b, status_b = await timed(client, path, body)
                existing.append(a)
                unknown.append(b)
                statuses.add((status_a, status_b))
            report[name] = {
                "existing_median_ms": round(statistics.median(existing), 2),
                "unknown_median_ms": round(statistics.median(unknown), 2),
                "difference_ms": round(
                    abs(statistics.median(existing) - statistics.median(unknown)), 2
                ),
                "same_status": all(a == b for a, b in statuses),
                "samples": samples,
            }
            print(name, report[name], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "serve.log"
        env = {
            **os.environ,
            "GATEHOUSE_PORT": str(port),
            "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/t.db",
            "GATEHOUSE_SECRETS_FILE": f"{tmp}/secrets.json",
            "GATEHOUSE_RATE_LIMITS": "{}",  # limits would answer 429 long before 1,000 samples
            "GATEHOUSE_REDIS_URL": "",
            "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
            "GATEHOUSE_SMTP_URL": "",
        }
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "gatehouse", "serve"],
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/health/live").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            report = asyncio.run(measure(base, log, args.samples))
        finally:
            server.terminate()
            server.wait(30)
    result = {
        "enumeration_timing": report,
        "target_ms": 10,
        "met": all(r["difference_ms"] <= 10 and r["same_status"] for r in report.values()),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
