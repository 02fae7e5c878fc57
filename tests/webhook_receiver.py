"""A webhook receiver for the tests and the benchmark: a threaded HTTP server on loopback that
verifies every request with `standardwebhooks` (as an integrator's receiver would), records it,
and answers as the test says (a status, after a delay); it can be stopped and started again on
the same port (an endpoint that is down for a while). It keeps connections alive (HTTP/1.1), as
a receiver in production would, and cuts them when stopped."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from tests.conftest import free_port


@dataclass
class Received:
    at: float
    path: str
    webhook_id: str
    timestamp: str
    event: dict[str, Any]
    verified: bool


# (path, how many requests this webhook-id had before this one) -> (status, seconds to wait)
Behaviour = Callable[[str, int], tuple[int, float]]


@dataclass
class Receiver:
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_ secret
    behaviour: Behaviour = lambda _path, _seen: (200, 0.0)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    open: set[str] = field(default_factory=set)  # webhook-ids being answered right now
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _seen: Counter[str] = field(default_factory=Counter)  # requests per webhook-id
    _connections: set[socket.socket] = field(default_factory=set)  # kept alive, to cut at stop

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a receiver in production would
            disable_nagle_algorithm = True  # else each answer waits out a delayed ACK (40 ms)

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver.lock:
                    receiver._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                secret = receiver.secrets.get(self.path)
                try:
                    Webhook(secret or "whsec_AAAA").verify(body, headers)
                    verified = secret is not None
                except Exception:
                    verified = False
                wid = headers.get("webhook-id", "")
                with receiver.lock:
                    seen = receiver._seen[wid]
                    receiver._seen[wid] += 1
                    receiver.received.append(
                        Received(
                            time.monotonic(),
                            self.path,
                            wid,
                            headers.get("webhook-timestamp", ""),
                            json.loads(body),
                            verified,
                        )
                    )
                    receiver.open.add(wid)
                status, delay = receiver.behaviour(self.path, seen)
                try:
                    time.sleep(delay)
                    self.send_response(status)
                    if status in (301, 302, 307, 308):
                        self.send_header("location", receiver.url("/elsewhere"))
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass
                finally:
                    with receiver.lock:
                        receiver.open.discard(wid)

            def log_message(self, *_args: Any) -> None:
                return None

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: no longer listening, and every kept-alive connection cut (a client finds the
        port refusing connections, as a stopped server's would)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def of(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]
