"""FastWorker on the URLs its pipelined connections do not serve, a unix socket and TLS: python
bullmq's own redis-py calls run the jobs end to end (retries and the completing call's redaction
included), on a Redis server started for the test with only that way in."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.jobs import fast_worker
from gatehouse.jobs.bullmq_queues import BullmqJobs
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.redis_pipeline import PipelinedRedis
from gatehouse.ports import JobRun
from tests.conftest import free_port, unique
from tests.integration.conftest import finished


@contextlib.contextmanager
def redis_server(directory: Path, url: str, *options: str) -> Iterator[str]:
    """`redis-server` (Debian's) with `options`, no persistence; `url` once it answers."""
    log = directory / "redis.log"
    command = ["redis-server", "--save", "", "--appendonly", "no", "--dir", str(directory)]
    with log.open("wb") as out:
        server = subprocess.Popen([*command, *options], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert server.poll() is None, f"redis-server exited: {log.read_text()}"
            try:
                with redis.Redis.from_url(url) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"redis-server silent: {log.read_text()}"
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(15)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own authority, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse test redis")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "redis.crt", directory / "redis.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(params=["unix", "tls"])
def fallback_url(request: pytest.FixtureRequest) -> Iterator[str]:
    # Not tmp_path: a unix socket's path must stay under about 100 characters.
    with tempfile.TemporaryDirectory(prefix="gh-redis-", dir="/tmp") as name:
        directory = Path(name)
        if request.param == "unix":
            socket = directory / "redis.sock"
            options = ["--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700"]
            url = f"unix://{socket}?db=0"
        else:
            cert, key = self_signed(directory)
            port = free_port()
            options = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            options += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            options += ["--tls-ca-cert-file", str(cert)]
            url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        with redis_server(directory, url, *options):
            yield url


@pytest.fixture
def no_pipelined_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FastWorker that opened a pipelined connection for these URLs fails to start."""

    class Refused(PipelinedRedis):
        def __init__(self, url: str, **_options: Any):
            raise AssertionError(f"a pipelined connection for {url}")

    monkeypatch.setattr(fast_worker, "PipelinedRedis", Refused)


@pytest.mark.usefixtures("no_pipelined_connection")
async def test_jobs_run_end_to_end_on_python_bullmqs_connections(fallback_url: str) -> None:
    assert not PipelinedRedis.supports(fallback_url)
    queue = unique("fallback")
    ran: list[tuple[int, int]] = []

    async def process(run: JobRun) -> dict[str, Any]:
        ran.append((run.data["n"], run.attempt))
        if run.data["n"] == 0 and run.attempt == 1:  # a retry, after a backoff: a delayed job
            raise ConnectionError("database away")
        return {"success": True, "message": "ok", "data": {"n": run.data["n"]}}

    jobs = BullmqJobs(fallback_url, attempts=2, backoff_ms=50)
    stop = asyncio.Event()
    # Concurrency 3 and a backlog: completing calls that fetch the next job, through redis-py.
    work = asyncio.ensure_future(BullmqWorkers(fallback_url).work([queue], process, stop, 3))
    try:
        data = [{"n": n, "password": f"secret-{n}"} for n in range(30)]
        ids = [await jobs.submit(queue, queue, one) for one in data]
        states = [await finished(jobs, queue, job_id) for job_id in ids]
    finally:
        stop.set()
        await asyncio.wait_for(work, 30)
        await jobs.close()
    assert [s.state for s in states] == ["completed"] * 30
    assert [s.result["data"]["n"] for s in states if s.result] == list(range(30))
    assert sorted(ran) == [(0, 1), (0, 2), *((n, 1) for n in range(1, 30))]
    with redis.Redis.from_url(fallback_url, decode_responses=True) as client:
        left = [client.hget(f"bull:{queue}:{job_id}", "data") for job_id in ids]
        served = client.info("commandstats")
    assert all(text and "secret-" not in text for text in left)  # blanked as they completed
    assert served["cmdstat_evalsha"]["calls"] >= 30  # BullMQ's scripts, on this server only
