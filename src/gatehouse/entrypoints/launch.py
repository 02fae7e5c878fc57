"""The `gatehouse` command's first step, taken before the package's modules are imported: the
libraries a process of some role never uses, kept out of its memory.

The api process makes no outgoing HTTP call, yet the socketio package imports engineio's HTTP
clients, and they import aiohttp and requests when those are installed (they are: Twilio's SDK,
used by the courier, needs them). That is 12 MB of the api's 135 MB at rest (issue 6). A name
set to None in `sys.modules` makes its import raise ImportError, which engineio expects. An api
that traces keeps `requests`: the OTLP exporter sends its spans with it.

A process that does not trace (no OTLP endpoint set) leaves the OpenTelemetry SDK out too:
redis-py imports its metrics part whenever it is installed, and nothing would use it.

`PROMETHEUS_MULTIPROC_DIR` is for the workers of one `gatehouse api` only, which their
supervisor gives a directory of its own: in any other process (one found in the environment,
say a compose file's) it would mix that process's metrics with others' and with earlier runs'."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

UNUSED: dict[str, tuple[str, ...]] = {"api": ("aiohttp", "requests")}
TRACING_NEEDS = frozenset({"requests"})
# As observability/tracing.py reads them (that module is not imported here: nothing of ours is).
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def leave_out(role: str, environ: Mapping[str, str] = os.environ) -> None:
    tracing = any(environ.get(name) for name in OTLP_ENDPOINTS)
    unused = UNUSED.get(role, ()) if tracing else (*UNUSED.get(role, ()), "opentelemetry.sdk")
    for name in unused:
        if tracing and name in TRACING_NEEDS:
            continue
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def main() -> None:
    if os.environ.get("GATEHOUSE_API_WORKER") != "1":  # processes.WORKER_ENV
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    leave_out(sys.argv[1] if len(sys.argv) > 1 else "")
    from gatehouse.entrypoints.cli import main as cli

    cli()
