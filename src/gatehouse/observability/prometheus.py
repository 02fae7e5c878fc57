"""The `Metrics` port on prometheus-client (DESIGN 11), correct across the api's worker processes.

Every metric is made once per process, when `prometheus_metrics()` is first called (bootstrap),
and with it every label set that is known in advance, so `/metrics` lists each metric (HELP and
TYPE) before its first sample. With `PROMETHEUS_MULTIPROC_DIR` set (the api's supervisor sets it
for its workers, `entrypoints/processes.py`) the values live in memory-mapped files of that
directory, one set a process, and a scrape of any worker adds up the files of all of them:
counters and histograms summed, `gatehouse_socketio_connections` summed over the live processes
(a dead worker's files are marked by the supervisor), the outbox gauges at their largest.

HTTP requests, the one metric written on every request, are counted in the process and written
to their values once a second (`FLUSH_SECONDS`): a scrape sees its own process's and another
worker's at most a second late, and a worker killed outright loses at most its last second's."""

from __future__ import annotations

import asyncio
import atexit
import bisect
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gatehouse.jobs.queues import QUEUES

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A method outside these is counted as "other": the label's values must stay few, whatever a
# client sends (a route is a template or `<unmatched>`, a status a number below 600).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HASH_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Label sets made at start-up (each counted from zero, so a rate is defined before the first).
LOGIN_OUTCOMES = ("success", "failure")
LOGIN_FACTORS = ("password", "totp", "recovery_code", "passkey")
JOB_OUTCOMES = ("completed", "refused", "retried", "failed")
CHANNELS = ("email", "sms", "whatsapp")
DELIVERY_OUTCOMES = ("sent", "abandoned")
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
MAX_HTTP_SERIES = 2000  # bounded anyway (templates x methods x statuses); a backstop
# A process's HTTP request counts reach its values at most this long after the request (at once
# after a quiet second, and on a scrape of that process or its exit).
FLUSH_SECONDS = 1.0


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


class PrometheusMetrics:
    """`ports.telemetry.MetricsEndpoint`. One a process: get it from `prometheus_metrics()`."""

    def __init__(self) -> None:
        # No `_created` series beside each counter and histogram (the multi-process mode has
        # none either): a scrape reads the same in both modes, and half as long.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = multiprocess_dir() is not None
        self._http: dict[tuple[str, str, int], _Series] = {}
        self._jobs: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        # HTTP requests counted but not yet written (`_Series`), and when the next write is due.
        self.flush_seconds = FLUSH_SECONDS
        self._pending_lock = threading.Lock()
        self._waiting: list[_Series] = []
        self._due = 0.0
        self._armed_on: asyncio.AbstractEventLoop | None = None
        self._served: set[tuple[str, int]] = set()
        r = self.registry
        self.requests = Counter(
            "gatehouse_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gatehouse_http_request_duration_seconds",
            "Time to answer an HTTP request (websockets not included), by route and method",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.logins = Counter(
            "gatehouse_logins",
            "Sign-in steps by outcome (success, failure, throttled, second_factor_required) "
            "and factor (password, totp, recovery_code, passkey, sign_up)",
            ["outcome", "factor"],
            registry=r,
        )
        self.jobs = Counter(
            "gatehouse_jobs",
            "Job attempts by queue and outcome (completed, refused: a business refusal, "
            "retried: failed with a retry to come, failed: no retry left)",
            ["queue", "outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "gatehouse_job_duration_seconds",
            "Time a job attempt took in the worker, its result's push included",
            ["queue"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.published_records = Counter(
            "gatehouse_outbox_published",
            "Outbox records published by the relay, by topic and type (a CloudEvent's type, "
            "a delivery command's template): gatehouse.user.verified counts completed sign-ups",
            ["topic", "type"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "gatehouse_outbox_pending",
            "Outbox rows not yet published (measured by the relay every few seconds)",
            registry=r,
            multiprocess_mode="max",
        )
        self.outbox_lag = Gauge(
            "gatehouse_outbox_lag_seconds",
            "Age of the oldest outbox row the relay last found unpublished (0 when none)",
            registry=r,
            multiprocess_mode="max",
        )
        self.deliveries = Counter(
            "gatehouse_deliveries",
            "Courier outcomes by channel: sent, abandoned, duplicate, dead-lettered (once a "
            "message), retry and fallback (once a failed try)",
            ["channel", "outcome"],
            registry=r,
        )
        self.hash_seconds = Histogram(
            "gatehouse_password_hash_seconds",
            "Time of one argon2id (or legacy bcrypt) hash or verification on the hashing pool",
            buckets=HASH_BUCKETS,
            registry=r,
        )
        self.sockets = Gauge(
            "gatehouse_socketio_connections",
            "Socket.IO connections open on the api processes",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.webhooks = Counter(
            "gatehouse_webhook_deliveries",
            "Webhook delivery attempts by outcome",
            ["outcome"],
            registry=r,
        )
        self._prefill()
        if not self._multiprocess:  # per process: no meaning summed over workers
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._metrics: tuple[MetricWrapperBase, ...] = tuple(
            m for m in vars(self).values() if isinstance(m, MetricWrapperBase)
        )
        self._exposed = _Exposed(self)

    def _prefill(self) -> None:
        for outcome in LOGIN_OUTCOMES:
            for factor in LOGIN_FACTORS:
                self.logins.labels(outcome, factor)
        for queue in QUEUES:
            self.job_seconds.labels(queue)
            for outcome in JOB_OUTCOMES:
                self.jobs.labels(queue, outcome)
        for channel in CHANNELS:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(channel, outcome)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)

    # --- Metrics ---------------------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        # One dict lookup on the hot path: the labelled children are made once per series.
        series = self._http.get((method, route, status))
        if series is None:
            series = self._series((method, route, status))
        with self._pending_lock:
            if series.add(seconds):
                self._waiting.append(series)
        # The first request after a quiet second is written at once; those after it wait for
        # the timer (or a scrape of this process, or its exit).
        if time.monotonic() >= self._due:
            self.flush()
        elif self._armed_on is None or self._armed_on.is_closed():
            self._arm()

    def _arm(self) -> None:
        """The timer, on the running loop. One set on a loop that has since closed never fires:
        the next request sets another (tests and embedded servers run one loop after another)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to come back: written now
            self.flush()
            return
        self._armed_on = loop
        loop.call_later(self.flush_seconds, self._timed_flush)

    def _timed_flush(self) -> None:
        self._armed_on = None
        self.flush()

    def flush(self) -> None:
        """Write every request counted since the last write to the values (in the api's
        multi-process mode, to this process's files, where a scrape of any worker reads them).
        A series whose write fails (its values are made with it, so nothing should) loses
        what it held, and the others are written still."""
        with self._pending_lock:
            self._due = time.monotonic() + self.flush_seconds
            waiting, self._waiting = self._waiting, []
            taken = [(series, series.take()) for series in waiting]
        for series, counts in taken:
            try:
                series.write(counts)
            except Exception:  # never the failure of the request that happened to flush
                log.warning("metrics: a series' requests were not written", exc_info=True)

    def _series(self, key: tuple[str, str, int]) -> _Series:
        method, route, status = key
        shown = method if method in METHODS else "other"
        series = _Series(
            self.requests.labels(route, shown, str(status)),
            self.request_seconds.labels(route, shown),
        )
        with self._lock:
            if len(self._http) < MAX_HTTP_SERIES:
                self._http[key] = series
        return series

    def login(self, outcome: str, factor: str) -> None:
        self.logins.labels(outcome, factor).inc()

    def job(self, queue: str, outcome: str, seconds: float) -> None:
        key = (queue, outcome)  # queues are ours (a Node producer's unknown one is refused)
        pair = self._jobs.get(key)
        if pair is None:
            pair = (self.jobs.labels(queue, outcome), self.job_seconds.labels(queue))
            with self._lock:
                if len(self._jobs) < MAX_HTTP_SERIES:
                    self._jobs[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def published(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (topic, kind), n in counts.items():
            self.published_records.labels(topic, kind).inc(n)

    def outbox(self, *, pending: int | None = None, lag_seconds: float | None = None) -> None:
        if pending is not None:
            self.outbox_pending.set(pending)
        if lag_seconds is not None:
            self.outbox_lag.set(max(lag_seconds, 0.0))

    def delivery(self, channel: str, outcome: str) -> None:
        self.deliveries.labels(channel, outcome).inc()

    def password_hash(self, seconds: float) -> None:
        self.hash_seconds.observe(seconds)

    def socket_connections(self, change: int) -> None:
        self.sockets.inc(change)

    def webhook_delivery(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()

    # --- reading them ----------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def serve(self, host: str, port: int) -> None:
        with self._lock:
            if (host, port) in self._served:
                return
            self._served.add((host, port))
        start_http_server(port, addr=host, registry=self._exposed)

    def families(self) -> Iterator[Metric]:
        """What a scrape reads: this process's metrics, or every process's files added up;
        then each metric that has no sample yet, as HELP and TYPE alone."""
        self.flush()
        if self._multiprocess:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            found: Iterable[Metric] = list(merged.collect())
        else:
            found = list(self.registry.collect())
        names = set()
        for family in found:
            names.add(family.name)
            yield family
        for metric in self._metrics:
            for family in metric.describe():
                if family.name not in names:
                    yield family


class _Series:
    """One route's counter and histogram, counted here and written to their values at most once
    a `PrometheusMetrics.flush_seconds` (`add` under the metrics' pending lock, `write` after
    `take`). In the api's multi-process mode every write to a value is a lock, a pid check and
    a memory-mapped file's write: a request's three were 2.1 of the 7.8 µs a replayed profile
    read spends in Gatehouse's own code (issue 17; in-process, the least of 100 batches).

    The values are the library's own, written straight (its `inc` and `observe` check, loop over
    the buckets and lock once more around each), so what a scrape reads is unchanged; a client
    version without these attributes gets the public calls instead, made at once."""

    __slots__ = ("_add", "_bounds", "_buckets", "_inc", "_public", "hits", "requests", "seconds")

    def __init__(self, counter: Any, histogram: Any):
        self.requests, self.seconds, self.hits = 0, 0.0, [0]
        self._public: tuple[Any, Any] | None = None  # another client: its calls, at once
        try:
            inc = counter._value.inc
            bounds = list(histogram._upper_bounds)
            buckets = [bucket.inc for bucket in histogram._buckets]
            add = histogram._sum.inc
        except AttributeError:  # pragma: no cover - another prometheus-client
            self._public = (counter, histogram)
            return
        if len(bounds) != len(buckets) or bounds[-1] != float("inf"):  # pragma: no cover
            self._public = (counter, histogram)
            return
        self._inc, self._add, self._buckets, self._bounds = inc, add, buckets, bounds
        self.hits = [0] * len(buckets)

    def add(self, seconds: float | None) -> bool:
        """Count one request; True when this series had nothing waiting (its first since the
        last write). Called under the pending lock."""
        if self._public is not None:  # pragma: no cover
            counter, histogram = self._public
            counter.inc()
            if seconds is not None:
                histogram.observe(seconds)
            return False
        first = self.requests == 0
        self.requests += 1
        if seconds is not None:
            self.seconds += seconds
            self.hits[bisect.bisect_left(self._bounds, seconds)] += 1
        return first

    def take(self) -> tuple[int, float, list[int]]:
        """What is waiting, zeroed here (under the pending lock)."""
        taken = self.requests, self.seconds, self.hits
        self.requests, self.seconds, self.hits = 0, 0.0, [0] * len(self.hits)
        return taken

    def write(self, taken: tuple[int, float, list[int]]) -> None:
        requests, seconds, hits = taken
        self._inc(float(requests))
        if any(hits):  # some of them were timed (a websocket is counted, not timed)
            self._add(seconds)
            for bucket, n in zip(self._buckets, hits, strict=True):
                if n:
                    bucket(float(n))


class _Exposed:
    """A collector over `PrometheusMetrics.families`, for `generate_latest` and the port."""

    def __init__(self, metrics: PrometheusMetrics):
        self.collect: Callable[[], Iterator[Metric]] = metrics.families


@functools.cache
def prometheus_metrics() -> PrometheusMetrics:
    """The process's metrics (prometheus-client's values are the process's: one set each)."""
    metrics = PrometheusMetrics()
    atexit.register(metrics.flush)  # a worker that stops keeps its last second's requests
    return metrics
