"""Runs each role (api, worker, relay, courier, or all of them) as a process until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import uvicorn

from gatehouse.adapters.sql_migrations import upgrade
from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.entrypoints.api import sockets
from gatehouse.entrypoints.api.app import Background, create_app
from gatehouse.entrypoints.courier import Courier
from gatehouse.entrypoints.relay import Relay

log = logging.getLogger(__name__)


def relay_role(services: Services) -> Background:
    s = services.settings
    relay = Relay(
        services.outbox_store,
        services.publisher,
        batch=s.relay_batch_size,
        interval=s.relay_poll_interval_seconds,
        clock=services.ctx.clock,
    )
    return relay.run


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
    )
    return courier.run


async def prepare(services: Services, *, migrate: bool) -> None:
    if migrate:
        await upgrade(services.engine)
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


async def serve_http(settings: Settings, roles: Sequence[Callable[[Services], Background]]) -> None:
    services = build(settings)
    await prepare(services, migrate=settings.is_sqlite or settings.env == "development")
    background = [sockets.sockets_role(services), *(role(services) for role in roles)]
    # Socket.IO at /socket.io around the FastAPI app (create_app stays plain for tests).
    app = sockets.mount(create_app(services, background=background))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        loop="none",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    await _Server(config).serve()


async def run_roles(settings: Settings, roles: Sequence[Callable[[Services], Background]]) -> None:
    """A headless process (relay, courier): runs until SIGTERM or SIGINT, then drains."""
    services = build(settings)
    await prepare(services, migrate=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(role(services)(stop) for role in roles))
    finally:
        await services.aclose()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without
        asyncio.run(main())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
