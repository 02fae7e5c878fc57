"""What the request path's instrumentation costs: the access-log middleware (where every request
is counted, timed and, with tracing, made a server span) around an app that answers at once, as
a hot route is answered, in one process, CPU time per request with

- metrics off (`NO_METRICS`): the log line's route look-up only (logs at WARNING write none);
- metrics on: prometheus-client, in this process's mode (run it with PROMETHEUS_MULTIPROC_DIR
  set to an empty directory for the api workers' mode);
- metrics on and tracing on: OpenTelemetry exporting to a null OTLP/HTTP receiver started in a
  process of its own (its CPU is not counted; the SDK's batch thread is, as in the api).

The three run in alternating rounds, so a host shared with other work slows them alike; the
medians are printed. The spans' batch queue may overflow at this rate ("Queue full"): the SDK
then drops spans, as it would under that load in production.

    .venv/bin/python benchmarks/telemetry_cost.py [--requests 20000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from starlette.routing import Route, Router

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import free_port

from gatehouse.observability.access_log import AccessLog
from gatehouse.observability.prometheus import prometheus_metrics

NULL_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(_message: Any) -> None:
    return None


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/auth/profile",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
    }


async def measure(requests: int, rounds: int, endpoint: str) -> dict[str, list[float]]:
    from gatehouse.observability.otel import OtelTracer
    from gatehouse.observability.tracing import tracing_enabled

    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    assert tracing_enabled()
    router = Router([Route("/api/auth/profile", endpoint=lambda _request: None)])
    metrics = prometheus_metrics()
    tracer = OtelTracer("api")
    variants = {
        "metrics off": AccessLog(app, router=router),
        "metrics on": AccessLog(app, router=router, metrics=metrics),
        "metrics + tracing": AccessLog(app, router=router, metrics=metrics, tracer=tracer),
    }
    found: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(rounds):
            for name, middleware in variants.items():
                start = time.process_time()
                for _ in range(requests):
                    await middleware(scope(), receive, send)
                found[name].append((time.process_time() - start) / requests * 1e6)
    finally:
        tracer.shutdown()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", NULL_SINK, str(port)])
    try:
        time.sleep(0.5)
        found = asyncio.run(measure(args.requests, args.rounds, f"http://127.0.0.1:{port}"))
    finally:
        sink.terminate()
        sink.wait()
    mode = "multi-process" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "single-process"
    base = statistics.median(found["metrics off"])
    for name, values in found.items():
        median = statistics.median(values)
        print(f"{mode} {name}: {median:.1f} us a request (+{median - base:.1f} us)")


if __name__ == "__main__":
    main()
