"""The `Metrics` port on prometheus-client (DESIGN 11), correct across the api's worker processes.

Every metric is made once per process, when `prometheus_metrics()` is first called (bootstrap),
and with it every label set that is known in advance, so `/metrics` lists each metric (HELP and
TYPE) before its first sample. With `PROMETHEUS_MULTIPROC_DIR` set (the api's supervisor sets it
for its workers, `entrypoints/processes.py`) the values live in memory-mapped files of that
directory, one set a process, and a scrape of any worker adds up the files of all of them:
counters and histograms summed, `gatehouse_socketio_connections` summed over the live processes
(a dead worker's files are marked by the supervisor), the outbox gauges at their largest."""

from __future__ import annotations

import bisect
import functools
import os
import threading
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
        series.count(1.0)
        if seconds is not None:
            series.observe(seconds)

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
    """One route's counter and histogram, written the short way: straight to their values
    (prometheus-client's `inc` and `observe` check, loop over the buckets and lock once more
    around each; a request's three writes take half the time this way, which the api's
    multi-process mode, a memory-mapped file per write, makes worth it). The values are the
    library's own, so what a scrape reads is unchanged; a client version without these
    attributes gets the public calls instead."""

    __slots__ = ("count", "observe")

    def __init__(self, counter: Any, histogram: Any):
        self.count: Callable[[float], None]
        self.observe: Callable[[float], None]
        try:
            self.count = counter._value.inc
            bounds = list(histogram._upper_bounds)
            buckets = [bucket.inc for bucket in histogram._buckets]
            add = histogram._sum.inc
        except AttributeError:  # pragma: no cover - another prometheus-client
            self.count, self.observe = counter.inc, histogram.observe
            return
        if len(bounds) != len(buckets) or bounds[-1] != float("inf"):  # pragma: no cover
            self.count, self.observe = counter.inc, histogram.observe
            return
        first_at_least = bisect.bisect_left

        def observe(seconds: float) -> None:
            add(seconds)
            buckets[first_at_least(bounds, seconds)](1.0)

        self.observe = observe


class _Exposed:
    """A collector over `PrometheusMetrics.families`, for `generate_latest` and the port."""

    def __init__(self, metrics: PrometheusMetrics):
        self.collect: Callable[[], Iterator[Metric]] = metrics.families


@functools.cache
def prometheus_metrics() -> PrometheusMetrics:
    """The process's metrics (prometheus-client's values are the process's: one set each)."""
    return PrometheusMetrics()
