"""The `Tracer` port on OpenTelemetry: spans exported in batches by OTLP over HTTP (DESIGN 11).

Imported by bootstrap only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set:
otherwise no OpenTelemetry module is loaded and nothing is traced. Everything else comes from
the standard `OTEL_*` variables, read by the SDK itself: `OTEL_SERVICE_NAME` (default
`gatehouse-<role>`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its argument, the
exporter's `OTEL_EXPORTER_OTLP_*` headers, timeout and compression, the batch's `OTEL_BSP_*`,
and `OTEL_PROPAGATORS` (W3C trace context and baggage by default)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from gatehouse.ports.telemetry import Attribute
from gatehouse.ports.telemetry import SpanKind as Kind

KINDS: dict[str, SpanKind] = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}


class OtelSpan:
    """`ports.telemetry.Span` over an OpenTelemetry span."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span):
        self._span = span

    def set_attribute(self, key: str, value: Attribute) -> None:
        self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))

    def carrier(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(self._span))
        return headers

    def end(self) -> None:
        self._span.end()


class OtelTracer:
    """`ports.telemetry.Tracer`: a provider of its own (not the global one, so that each
    `bootstrap.build` has its own and closes it), exporting to the OTLP endpoint."""

    def __init__(self, role: str, exporter: object | None = None):
        name = os.environ.get("OTEL_SERVICE_NAME") or f"gatehouse-{role}"
        resource = Resource.create({"service.name": name, "gatehouse.role": role})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter or OTLPSpanExporter())  # type: ignore[arg-type]
        )
        self._tracer = self._provider.get_tracer("gatehouse")

    @staticmethod
    def _context(parent: Mapping[str, str] | None) -> Context | None:
        return None if parent is None else propagate.extract(parent)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
    ) -> Iterator[OtelSpan]:
        # An exception's text is never recorded (a database error quotes its statement's
        # parameters): its type marks the span failed.
        with self._tracer.start_as_current_span(
            name,
            context=self._context(parent),
            kind=KINDS[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield OtelSpan(span)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                raise

    def start(
        self,
        name: str,
        *,
        kind: Kind = "internal",
        parent: Mapping[str, str] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
    ) -> OtelSpan:
        span = self._tracer.start_span(
            name, context=self._context(parent), kind=KINDS[kind], attributes=attributes
        )
        return OtelSpan(span)

    def carrier(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(headers)
        return headers

    def shutdown(self) -> None:
        self._provider.shutdown()
