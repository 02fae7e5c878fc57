"""What the processes measure and trace, as ports (DESIGN 11): `Metrics` (Prometheus in
`observability/prometheus.py`, or `NoMetrics`) and `Tracer` (OpenTelemetry in
`observability/otel.py` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; None otherwise, and then
nothing traces). Labels are names from small fixed sets (a route template, a queue, a channel,
an outcome): never a path, an address, a user id or anything a client typed."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol

# The field of an outbox row's payload that carries the trace context of the request or job
# that wrote it (W3C `traceparent`, `tracestate`); the relay takes it out before publishing and
# sends it on as Kafka headers instead, so no consumer ever sees it in a message.
TRACE_FIELD = "_trace"
# Job data may carry the producer's W3C trace context under these keys (`traceparent` and,
# optionally, `tracestate`): the worker's span is then its child.
TRACE_KEYS = ("traceparent", "tracestate")

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
Attribute = str | int | float | bool


class Metrics(Protocol):
    """Counts and timings. Each call is cheap (a few microseconds): hot paths may make them."""

    def http_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """One answered request (`route`: the route's template); `seconds` None: not timed
        (a websocket, whose duration is the connection's)."""

    def login(self, outcome: str, factor: str) -> None: ...
    def job(self, queue: str, outcome: str, seconds: float) -> None: ...
    def published(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Outbox records the relay published, by (topic, type)."""

    def outbox(self, *, pending: int | None = None, lag_seconds: float | None = None) -> None: ...
    def delivery(self, channel: str, outcome: str) -> None: ...
    def password_hash(self, seconds: float) -> None: ...
    def socket_connections(self, change: int) -> None: ...
    def webhook_delivery(self, outcome: str) -> None: ...


class MetricsEndpoint(Metrics, Protocol):
    """Metrics and the means to read them: the text `GET /metrics` answers, and a port of its
    own for the processes without HTTP (`GATEHOUSE_METRICS_PORT`)."""

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus' text format."""

    def serve(self, host: str, port: int) -> None:
        """Answer `GET /metrics` on `host:port` from a thread, until the process ends."""


class NoMetrics:
    """Counts nothing (tests of one part, tools)."""

    def http_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        return None

    def login(self, outcome: str, factor: str) -> None:
        return None

    def job(self, queue: str, outcome: str, seconds: float) -> None:
        return None

    def published(self, counts: Mapping[tuple[str, str], int]) -> None:
        return None

    def outbox(self, *, pending: int | None = None, lag_seconds: float | None = None) -> None:
        return None

    def delivery(self, channel: str, outcome: str) -> None:
        return None

    def password_hash(self, seconds: float) -> None:
        return None

    def socket_connections(self, change: int) -> None:
        return None

    def webhook_delivery(self, outcome: str) -> None:
        return None


NO_METRICS = NoMetrics()


class Span(Protocol):
    """One span: named, with attributes, ended by its context manager or by `end()`."""

    def set_attribute(self, key: str, value: Attribute) -> None: ...
    def rename(self, name: str) -> None: ...
    def fail(self, description: str) -> None:
        """Mark the span's status as an error."""

    def carrier(self) -> dict[str, str]:
        """This span's context as W3C headers (`traceparent`, `tracestate`)."""

    def end(self) -> None: ...


class Tracer(Protocol):
    """Spans. `parent`: None continues the current context (the span is a child of the span
    in progress, if any); a mapping of W3C headers continues the context they carry, and an
    empty one (or one without a valid `traceparent`) starts a new trace."""

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
    ) -> AbstractContextManager[Span]:
        """A span that is the current one inside the `with` (an exception marks it failed)."""

    def start(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
    ) -> Span:
        """A span that is not made current (several at once: a relay's batch); `end()` it."""

    def carrier(self) -> dict[str, str]:
        """The current context as W3C headers; empty when no span is in progress."""

    def shutdown(self) -> None:
        """Send what is buffered and stop."""
