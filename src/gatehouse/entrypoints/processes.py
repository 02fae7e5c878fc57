"""Runs each role (api, worker, relay, courier, or all of them) as a process until SIGTERM.

`gatehouse api` with several workers gives them a fresh directory for their metric files
(`PROMETHEUS_MULTIPROC_DIR`), so that a scrape of any of them adds up all of them, marks the
files of a worker that dies, and removes the directory when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import uvicorn

from gatehouse.admin import audit as admin_audit
from gatehouse.bootstrap import Services, build, load_secrets
from gatehouse.config import Settings
from gatehouse.courier.consumer import Courier
from gatehouse.domain import events
from gatehouse.entrypoints.app import Background, create_app
from gatehouse.outbox.relay import Relay
from gatehouse.realtime import sockets
from gatehouse.web.front import HotFront
from gatehouse.web.one_write import OneWriteHttpProtocol
from gatehouse.webhooks.delivery import WebhookDeliverer
from gatehouse.webhooks.dispatch import Dispatcher

log = logging.getLogger(__name__)


def relay_role(services: Services) -> Background:
    s = services.settings
    relay = Relay(
        services.outbox_store,
        services.publisher,
        batch=s.relay_batch_size,
        interval=s.relay_poll_interval_seconds,
        clock=services.ctx.clock,
        metrics=services.metrics,
        tracer=services.tracer,
    )

    async def relay_and_audit(stop: asyncio.Event) -> None:  # the audit chainer and retention
        store, days = services.audit_store(), s.audit_retention_days
        await asyncio.gather(
            relay.run(stop), admin_audit.keep_chaining(services.ctx, store, days, stop)
        )

    return relay_and_audit


def courier_role(services: Services) -> Background:
    s = services.settings
    courier = Courier(
        services.delivery_source(),
        keyring=services.ctx.keyring,
        renderer=services.templates,
        channels=services.channels,
        clock=services.ctx.clock,
        deliveries=services.delivery_log(),
        attempts=s.courier_attempts,
        first_backoff=s.courier_backoff_seconds,
        dead_letters=services.dead_letters(),
        lease=s.courier_lease_seconds,
        retry_budget=s.courier_retry_budget_seconds,
        metrics=services.metrics,
        tracer=services.tracer,
    )
    return courier.run


def webhooks_role(services: Services) -> Background:
    """`user-events` to delivery rows (its own consumer group), and the deliveries posted."""
    s = services.settings
    store, client = services.webhooks()
    deliverer = WebhookDeliverer(
        store,
        client,
        services.ctx.keyring,
        services.ctx.clock,
        retry_hours=s.webhook_retry_hours,
        backoff_base=s.webhook_backoff_base_ms / 1000,
        backoff_cap=s.webhook_backoff_max_seconds,
        lease=s.webhook_lease_seconds,
        concurrency=s.webhook_concurrency,
        metrics=services.metrics,
    )
    dispatcher = Dispatcher(
        services.delivery_source(events.USER_EVENTS), store, services.ctx.clock, wake=deliverer.wake
    )

    async def run(stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(dispatcher.run(stop), deliverer.run(stop))
        finally:
            await client.aclose()

    return run


async def prepare(services: Services, *, migrate: bool) -> None:
    if migrate:
        await services.schema.upgrade()
    created = await asyncio.to_thread(services.ensure_topics)
    if created:
        log.info("created Kafka topics: %s", ", ".join(created))


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process would die by the
    signal; a drained, orderly stop is a success and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT: every api worker binds its own, and the kernel spreads
    incoming connections across them evenly (a shared accept queue favours whichever is idle
    first, and a single busy worker starves the rest)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


async def serve_http(
    settings: Settings,
    roles: Sequence[Callable[[Services], Background]],
    *,
    prepared: bool = False,
    role: str = "api",
) -> None:
    """One HTTP process. `prepared`: a supervisor migrated and created the topics already (N
    workers must not race to migrate) and the port is shared with sibling workers."""
    services = build(settings, role=role)
    if not prepared:
        await prepare(services, migrate=settings.migrates_on_start)
    background = [sockets.sockets_role(services), *(role(services) for role in roles)]
    if services.invalidations is not None:  # this process answers from a signed-in cache
        background.append(services.invalidations.listen)
    # Socket.IO at /socket.io inside the FastAPI app's middleware (create_app stays plain for
    # tests).
    fastapi = sockets.mount(create_app(services, background=background))
    # The hot routes answered in front of the app's layers (web/front.py).
    app = HotFront(fastapi, fastapi=fastapi, max_body_bytes=settings.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # Ours (observability/access_log.py) writes the line; uvicorn's, though silenced by its
        # level, would still build the client address and path of every request for it.
        access_log=False,
        loop="none",
        # A response's head and body in one write (web/one_write.py).
        http=OneWriteHttpProtocol,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # A websocket message is a request body too: refused by the server past the same limit
        # (uvicorn would take 16 MiB before Engine.IO could look at its size).
        ws_max_size=settings.max_body_bytes,
    )
    sockets_ = [listening_socket(settings.host, settings.port)] if prepared else None
    settle()
    await _Server(config).serve(sockets=sockets_)


WORKER_ENV = "GATEHOUSE_API_WORKER"  # set by the supervisor on the processes it starts


def api_workers(settings: Settings) -> int:
    return settings.api_workers or os.cpu_count() or 1


def serve_api(settings: Settings) -> None:
    """`gatehouse api`: one process, or a supervisor of `GATEHOUSE_API_WORKERS` processes."""
    if os.environ.get(WORKER_ENV) == "1":
        run(lambda: serve_http(settings, [], prepared=True))
        return
    workers = api_workers(settings)
    if workers == 1:
        run(lambda: serve_http(settings, []))
        return
    load_secrets(settings)  # generated once here in development, not raced for by N workers

    async def prepare_once() -> None:
        services = build(settings, role="api")
        try:
            await prepare(services, migrate=settings.migrates_on_start)
        finally:
            await services.aclose()

    run(prepare_once)
    env = {**os.environ, WORKER_ENV: "1"}
    if "GATEHOUSE_HASH_WORKERS" not in os.environ:
        # Hashes are CPU-bound: together the workers run one per core, not one per core each.
        env["GATEHOUSE_HASH_WORKERS"] = str(max(1, (os.cpu_count() or 1) // workers))
    metrics = metrics_dir()
    env[MULTIPROC_ENV] = metrics
    supervisor = Supervisor([sys.executable, "-m", "gatehouse", "api"], env, workers)
    supervisor.on_exit = lambda pid: mark_dead(metrics, pid)
    try:
        code = supervisor.run()
    finally:
        shutil.rmtree(metrics, ignore_errors=True)
    raise SystemExit(code)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> str:
    """A new directory for the workers' metric files (in memory when /dev/shm exists, else
    under TMPDIR): an earlier run's files would count its requests again."""
    shm = "/dev/shm"  # noqa: S108 - a private directory made in it by mkdtemp (mode 0700)
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="gatehouse-metrics-", dir=base)


def mark_dead(directory: str, pid: int) -> None:
    """A worker is gone: its gauges that count live processes only (Socket.IO connections)
    stop counting; its counters stay, as they counted what it did."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class Supervisor:
    """Keeps `count` copies of a command running; SIGTERM or SIGINT is passed on to them and the
    supervisor exits once they have drained (with the worst exit code). A worker that dies on
    its own is started again, after a pause if it dies young (a crash loop must not spin)."""

    def __init__(self, command: list[str], env: dict[str, str], count: int):
        self.command = command
        self.env = env
        self.count = count
        self.stopping = False
        self.children: list[subprocess.Popen[bytes]] = []
        self.on_exit: Callable[[int], None] = lambda _pid: None  # told of each worker gone

    def _start(self) -> subprocess.Popen[bytes]:
        # Our own interpreter and module, no shell: nothing outside comes into the command.
        return subprocess.Popen(self.command, env=self.env)  # noqa: S603

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        self.children = [self._start() for _ in range(self.count)]
        started = [time.monotonic()] * self.count
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        log.info("api supervisor: %d workers (pids %s)", self.count, [c.pid for c in self.children])
        while not self.stopping:
            time.sleep(0.2)
            for i, child in enumerate(self.children):
                code = child.poll()
                if code is None or self.stopping:
                    continue
                log.error("api worker %d exited with %s; starting another", child.pid, code)
                self.on_exit(child.pid)
                if time.monotonic() - started[i] < 5:
                    time.sleep(1)
                self.children[i] = self._start()
                started[i] = time.monotonic()
        # A worker still starting when the signal came dies by it: that is a stop, not a failure.
        stopped = (-signal.SIGTERM, -signal.SIGINT)
        codes = [0 if code in stopped else abs(code) for code in (c.wait() for c in self.children)]
        return max(codes, default=0)


async def run_roles(
    settings: Settings,
    roles: Sequence[Callable[[Services], Background]],
    role: str = "gatehouse",
) -> None:
    """A headless process (worker, relay, courier): runs until SIGTERM or SIGINT, then drains;
    answers GET /metrics on GATEHOUSE_METRICS_PORT when it is set."""
    services = build(settings, role=role)
    if settings.metrics_port:
        services.metrics.serve(settings.host, settings.metrics_port)
    await prepare(services, migrate=False)
    settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(role(services)(stop) for role in roles))
    finally:
        await services.aclose()


def settle() -> None:
    """Once a process has started (modules imported, services and app built): what exists now
    lives as long as the process, so the collector stops scanning it. Without this, each full
    collection walks every object of every imported module; py-spy put the collector at 4-6 %
    of an api worker's CPU under refresh load, 1 % after."""
    gc.collect()
    gc.freeze()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without
        asyncio.run(main())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
