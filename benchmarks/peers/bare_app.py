"""The ceiling's bare route (issue 17): an ASGI callable that answers every request with the bytes
a real `GET /api/auth/profile` answered (status 200, its body and headers, from the JSON file
named by BENCH_BARE_RESPONSE) and does nothing else: no framework, no routing, no middleware, no
token check, no database. What is left is the server stack, served exactly as `gatehouse api`
serves Gatehouse (`gatehouse.entrypoints.processes`): uvicorn with the same options on uvloop,
`GATEHOUSE_API_WORKERS` processes (default one per core) under the api's own Supervisor, each on
its own SO_REUSEPORT socket; one worker binds through uvicorn, as the api does.

    BENCH_BARE_RESPONSE=a.json GATEHOUSE_PORT=8001 .venv/bin/python benchmarks/peers/bare_app.py

Benchmark-only: nothing in Gatehouse imports it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from gatehouse.entrypoints import processes

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DROPPED = {"content-length", "date", "server"}  # uvicorn writes date; length is recomputed


def bare_app(path: str) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    recorded = json.loads(Path(path).read_text())
    body = recorded["body"].encode()
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in recorded["headers"]
        if name.lower() not in DROPPED
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await send(start)
            await send(answer)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    return app


async def serve(host: str, port: int, shared: bool) -> None:
    """One HTTP process, with `processes.serve_http`'s uvicorn options."""
    config = uvicorn.Config(
        bare_app(os.environ["BENCH_BARE_RESPONSE"]),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        loop="none",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    sockets = [processes.listening_socket(host, port)] if shared else None
    await processes._Server(config).serve(sockets=sockets)


def main() -> None:
    host = os.environ.get("GATEHOUSE_HOST", "127.0.0.1")
    port = int(os.environ.get("GATEHOUSE_PORT", "8001"))
    workers = int(os.environ.get("GATEHOUSE_API_WORKERS") or 0) or os.cpu_count() or 1
    if os.environ.get(processes.WORKER_ENV) == "1":
        processes.run(lambda: serve(host, port, shared=True))
        return
    if workers == 1:
        processes.run(lambda: serve(host, port, shared=False))
        return
    env = {**os.environ, processes.WORKER_ENV: "1"}
    supervisor = processes.Supervisor([sys.executable, str(Path(__file__).resolve())], env, workers)
    raise SystemExit(supervisor.run())


if __name__ == "__main__":
    main()
