"""The HTTP request counts are kept in the process and written to prometheus-client's values at
most `flush_seconds` later (`observability/prometheus.py`): nothing is lost on the way, a scrape
of the process reads its own requests exactly, and a process that exits writes what waits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from gatehouse.observability.prometheus import PrometheusMetrics


def written(metrics: PrometheusMetrics, route: str) -> float:
    """What the counter's value holds now (no flush)."""
    return float(metrics.requests.labels(route, "GET", "200")._value.get())


def timed(metrics: PrometheusMetrics, route: str) -> float:
    histogram = metrics.request_seconds.labels(route, "GET")
    return float(sum(bucket.get() for bucket in histogram._buckets))


def test_the_first_request_after_a_quiet_spell_is_written_the_rest_by_the_timer() -> None:
    metrics = PrometheusMetrics()
    metrics.flush_seconds = 0.2
    route = f"/t/{uuid.uuid4().hex}"

    async def traffic() -> tuple[float, float, float]:
        metrics.http_request("GET", route, 200, 0.01)
        first = written(metrics, route)
        for _ in range(9):
            metrics.http_request("GET", route, 200, 0.02)
        waiting = written(metrics, route)
        await asyncio.sleep(0.35)  # the timer's write
        return first, waiting, written(metrics, route)

    assert asyncio.run(traffic()) == (1.0, 1.0, 10.0)
    assert timed(metrics, route) == 10.0


def test_a_scrape_of_the_process_reads_every_request_it_answered() -> None:
    metrics = PrometheusMetrics()
    metrics.flush_seconds = 3600.0  # no timer would write them in time
    route = f"/t/{uuid.uuid4().hex}"

    async def traffic() -> None:
        for _ in range(5):
            metrics.http_request("GET", route, 200, None)  # counted, not timed

    asyncio.run(traffic())
    assert written(metrics, route) == 1.0
    text = metrics.exposition()[0].decode()
    line = f'gatehouse_http_requests_total{{method="GET",route="{route}",status="200"}} 5.0'
    assert line in text
    assert timed(metrics, route) == 0.0


def test_without_an_event_loop_each_request_is_written_at_once() -> None:
    metrics = PrometheusMetrics()
    metrics.flush_seconds = 3600.0
    route = f"/t/{uuid.uuid4().hex}"
    for n in range(1, 4):
        metrics.http_request("GET", route, 200, 0.5)
        assert written(metrics, route) == n


def test_threads_counting_while_others_flush_lose_nothing() -> None:
    metrics = PrometheusMetrics()
    metrics.flush_seconds = 3600.0
    routes = [f"/t/{uuid.uuid4().hex}" for _ in range(3)]
    stop = threading.Event()

    def count(route: str) -> None:
        async def many() -> None:
            for _ in range(3000):
                metrics.http_request("GET", route, 200, 0.001)

        asyncio.run(many())

    def flushing() -> None:
        while not stop.is_set():
            metrics.flush()

    flusher = threading.Thread(target=flushing)
    flusher.start()
    counters = [threading.Thread(target=count, args=(route,)) for route in routes * 2]
    for thread in counters:
        thread.start()
    for thread in counters:
        thread.join()
    stop.set()
    flusher.join()
    metrics.flush()
    assert [written(metrics, route) for route in routes] == [6000.0] * 3
    assert [timed(metrics, route) for route in routes] == [6000.0] * 3


def test_a_worker_that_exits_writes_what_waited_to_its_file(tmp_path: Path) -> None:
    """The api's multi-process mode: the requests counted in the last second reach the
    process's file when it exits normally (as a worker does on SIGTERM)."""
    script = """
import asyncio
from gatehouse.observability.prometheus import prometheus_metrics
metrics = prometheus_metrics()
metrics.flush_seconds = 3600.0
async def traffic():
    for _ in range(7):
        metrics.http_request("GET", "/exit", 200, 0.003)
asyncio.run(traffic())
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    files = [str(f) for f in tmp_path.glob("*.db")]
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in MultiProcessCollector.merge(files, accumulate=True)
        for s in family.samples
        if s.labels.get("route") == "/exit"
    }
    assert samples[("gatehouse_http_requests_total", None)] == 7.0
    assert samples[("gatehouse_http_request_duration_seconds_count", None)] == 7.0
    assert samples[("gatehouse_http_request_duration_seconds_bucket", "0.005")] == 7.0


def test_a_timer_lost_with_its_closed_loop_is_set_again_on_the_next() -> None:
    """Tests and embedded servers run one event loop after another in one process: a timer set
    on a loop that closed never fires, and the next request sets another."""
    metrics = PrometheusMetrics()
    metrics.flush_seconds = 0.3
    route = f"/t/{uuid.uuid4().hex}"

    async def two() -> None:
        metrics.http_request("GET", route, 200, 0.01)  # written at once
        metrics.http_request("GET", route, 200, 0.01)  # waits for this loop's timer

    async def third() -> float:
        metrics.http_request("GET", route, 200, 0.01)
        await asyncio.sleep(0.5)
        return written(metrics, route)

    asyncio.run(two())  # closes with its timer pending
    assert written(metrics, route) == 1.0
    assert asyncio.run(third()) == 3.0
