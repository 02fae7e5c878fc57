"""FastWorker refuses a python bullmq it was not written for, at construction (not import), and
keeps the pipelined connections to plain `redis://`: TLS and unix sockets use redis-py's."""

from __future__ import annotations

import re
from typing import Any

import bullmq
import pytest
from bullmq import Job

from gatehouse.jobs import fast_worker
from gatehouse.jobs.bullmq_workers import with_socket_timeout
from gatehouse.jobs.fast_worker import BLOCKING_SOCKET_TIMEOUT, FastWorker
from gatehouse.jobs.redis_pipeline import PipelinedRedis


async def process(job: Job, _token: str) -> dict[str, Any]:
    return {}


@pytest.fixture
def pipelined(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs FastWorker opens pipelined connections for (none is connected here)."""
    opened: list[str] = []

    class Recorded(PipelinedRedis):
        def __init__(self, url: str, **options: Any):
            opened.append(url)
            super().__init__(url, **options)

    monkeypatch.setattr(fast_worker, "PipelinedRedis", Recorded)
    return opened


def test_the_installed_bullmq_is_the_supported_one() -> None:
    assert bullmq.__version__.startswith("3.4.")
    fast_worker.check_bullmq_version()


@pytest.mark.parametrize("version", ["3.5.0", "4.0.1", "3.3.9", "2.4.0", "3.40.0"])
async def test_another_bullmq_version_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, pipelined: list[str], version: str
) -> None:
    monkeypatch.setattr(bullmq, "__version__", version)
    expected = (
        "FastWorker supports python bullmq 3.4.x only (it overrides Worker internals),"
        f" and bullmq {version} is installed"
    )
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        FastWorker("q", process, {"connection": "redis://127.0.0.1:1/0", "autorun": False})
    assert pipelined == []  # refused before building anything


@pytest.mark.parametrize("version", ["3.4.0", "3.4.4", "3.4.17"])
async def test_any_3_4_release_starts(
    monkeypatch: pytest.MonkeyPatch, pipelined: list[str], version: str
) -> None:
    monkeypatch.setattr(bullmq, "__version__", version)
    worker = FastWorker("q", process, {"connection": "redis://127.0.0.1:1/0", "autorun": False})
    await worker.close()
    assert len(pipelined) == 2  # the scripts' connection and the wait for jobs


@pytest.mark.parametrize(
    ("url", "pipelined_too"),
    [
        ("redis://127.0.0.1:6379/3", True),
        ("rediss://127.0.0.1:6380/3", False),
        ("unix:///run/redis/redis.sock?db=3", False),
    ],
)
async def test_only_plain_tcp_gets_pipelined_connections(
    pipelined: list[str], url: str, pipelined_too: bool
) -> None:
    """Built as the worker role builds it (never connected: nothing listens there)."""
    connection = with_socket_timeout(url, BLOCKING_SOCKET_TIMEOUT)
    worker = FastWorker("q", process, {"connection": connection, "autorun": False})
    await worker.close()
    assert PipelinedRedis.supports(url) is pipelined_too
    assert bool(pipelined) is pipelined_too
