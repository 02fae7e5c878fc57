"""A real OTLP/HTTP trace receiver for the tests: `POST /v1/traces` with an
`ExportTraceServiceRequest` (protobuf, gzip or not), decoded with opentelemetry-proto; the
spans kept with their service, parents and attributes, and printed as a tree."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a trace's first span
    name: str
    kind: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    start: int


@dataclass
class OtlpSink:
    """The receiver's state: every span received, and every request's raw body (for checks
    that no secret was ever sent)."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ReceivedSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.code,
                            start=span.start_time_unix_nano,
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(found)

    def snapshot(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return sorted((s for s in self.snapshot() if s.trace_id == trace_id), key=lambda s: s.start)

    def wait_for(
        self, predicate: Any, timeout: float = 30, what: str = "spans"
    ) -> list[ReceivedSpan]:
        """Until `predicate(spans)` is true (it returns them); fails naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in spans})
                raise AssertionError(f"not received in {timeout}s: {what}; got {names}")
            time.sleep(0.1)


def tree(spans: list[ReceivedSpan]) -> str:
    """One trace as an indented tree: `name [service, kind]`, children under their parent."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        parent = span.parent_id if span.parent_id in ids else ""
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            marker = "" if span.parent_id in ids or not span.parent_id else " (parent elsewhere)"
            lines.append(f"{'  ' * depth}{span.name} [{span.service}, {span.kind}]{marker}")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


class _Handler(BaseHTTPRequestHandler):
    sink: OtlpSink

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.rstrip("/") != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        self.sink.add(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def otlp_sink() -> Iterator[OtlpSink]:
    """A receiver on a free loopback port (its base URL in `url`), for the `with` block."""
    sink = OtlpSink()
    handler = type("Handler", (_Handler,), {"sink": sink})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
