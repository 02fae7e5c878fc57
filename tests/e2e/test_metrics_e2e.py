"""`GET /metrics` of a real `gatehouse api` with two worker processes (SQLite, embedded: no
service needed): whichever worker answers the scrape, it reports what both did, exactly (once
the second in which a worker writes its request counts has passed); a worker that dies keeps
what it had written (all but at most its last second's requests), and its open sockets stop
counting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import socketio
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import free_port
from tests.e2e.stack import children
from tests.unit.test_metrics import DESIGNED, Scrape, parse

pytestmark = pytest.mark.e2e
LIVE = {"route": "/health/live", "method": "GET", "status": "200"}
REQUESTS = "gatehouse_http_requests_total"


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not in {timeout}s: {what}")


def multiproc_dir(pid: int) -> Path:
    """The directory the supervisor gave its workers, read from a worker's environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [entry] = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


def per_process(directory: Path, prefix: str, pid: int, sample: str, **labels: str) -> float:
    """One worker's own value of a sample, read from its file alone."""
    files = [str(f) for f in directory.glob(f"{prefix}_{pid}.db")]
    for family in MultiProcessCollector.merge(files, accumulate=False):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return 0.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEHOUSE_API_WORKERS": "2",
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gh.db'}",
        "GATEHOUSE_SECRETS_FILE": str(tmp_path / "secrets.json"),
        "GATEHOUSE_REDIS_URL": "",
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": "",
        "GATEHOUSE_RATE_LIMITS": "{}",
        "GATEHOUSE_ARGON2_MEMORY_KIB": "1024",
        "GATEHOUSE_ARGON2_TIME_COST": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gatehouse", "api"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def scrape(url: str) -> Scrape:
    # A new connection each time: the kernel may hand it to either worker.
    reply = httpx.get(f"{url}/metrics", timeout=10)
    assert reply.status_code == 200
    return parse(reply.text)


def test_every_worker_reports_the_sum_of_all_of_them(
    api: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, process, log = api

    def live() -> bool:
        try:
            return httpx.get(f"{url}/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    workers = wait_for(lambda: len(children(process.pid)) == 2 and children(process.pid), 60, "2")
    wait_for(live, 60, "the api answering")
    directory = multiproc_dir(workers[0])
    assert directory == multiproc_dir(workers[1]) and directory.is_dir()
    before = scrape(url)
    for _ in range(60):
        assert httpx.get(f"{url}/health/live").status_code == 200
    for i in range(10):  # unknown accounts: refused, after a real argon2 check each
        body = {"email": f"nobody-{i}@example.com", "password": "not a password at all"}
        assert httpx.post(f"{url}/api/auth/login", json=body).status_code == 401
    expected = before(REQUESTS, **LIVE) + 60
    # Each worker writes its requests to its file within a second (FLUSH_SECONDS); from then
    # on every scrape, whichever worker answers it, reads all of them.
    wait_for(lambda: scrape(url)(REQUESTS, **LIVE) == expected, 5, f"{expected} requests")
    for _ in range(8):
        now = scrape(url)
        assert now(REQUESTS, **LIVE) == expected
        failures = now("gatehouse_logins_total", outcome="failure", factor="password")
        assert (
            failures == before("gatehouse_logins_total", outcome="failure", factor="password") + 10
        )
        hashes = now("gatehouse_password_hash_seconds_count")
        assert hashes == before("gatehouse_password_hash_seconds_count") + 10
    # Both workers answered some of them: the scrape added up their files.
    own = [per_process(directory, "counter", pid, REQUESTS, **LIVE) for pid in workers]
    assert all(n > 0 for n in own) and sum(own) == expected, own

    # A socket is one connection whichever worker holds it; it stops counting when it goes.
    async def with_a_socket() -> tuple[float, float]:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, transports=["websocket"])
        try:
            open_ = await asyncio.to_thread(lambda: scrape(url)("gatehouse_socketio_connections"))
        finally:
            await client.disconnect()
        await asyncio.sleep(0.3)
        closed = await asyncio.to_thread(lambda: scrape(url)("gatehouse_socketio_connections"))
        return open_, closed

    assert asyncio.run(with_a_socket()) == (1.0, 0.0)

    # A worker killed with a socket open: its counts stay, its socket is no longer counted.
    async def killed_with_a_socket() -> None:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, transports=["websocket"])
        holder = wait_for(
            lambda: [
                pid
                for pid in workers
                if per_process(directory, "gauge_livesum", pid, "gatehouse_socketio_connections")
            ],
            10,
            "the worker holding the socket",
        )[0]
        os.kill(holder, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await client.disconnect()

    asyncio.run(killed_with_a_socket())
    wait_for(lambda: len(children(process.pid)) == 2, 30, "a replacement worker")
    wait_for(live, 60, "the api answering again")
    after = scrape(url)
    assert after("gatehouse_socketio_connections") == 0
    assert after(REQUESTS, **LIVE) >= expected  # the dead worker's requests still counted
    assert "starting another" in log.read_text(errors="replace")
    assert {name.removesuffix("_total") for name in DESIGNED} <= set(after.types)
