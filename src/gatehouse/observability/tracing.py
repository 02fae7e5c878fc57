"""Whether this process traces, and its tracer: OpenTelemetry is imported only when it does
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, `OTEL_SDK_DISABLED`
not `true`); otherwise no module of it is loaded, and nothing is measured for traces."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gatehouse.ports.telemetry import Tracer

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    on = any(environ.get(name) for name in ENDPOINTS)
    return on and environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def build_tracer(role: str) -> Tracer | None:
    """The process's tracer (`role`: api, worker, relay, courier, serve), or None when off."""
    if not tracing_enabled():
        return None
    from gatehouse.observability.otel import OtelTracer

    return OtelTracer(role)
