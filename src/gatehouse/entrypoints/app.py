"""The FastAPI application; background roles (relay, courier) run in its lifespan when asked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gatehouse import __version__
from gatehouse.admin import http as admin
from gatehouse.bootstrap import Services
from gatehouse.jobs import http as jobs
from gatehouse.observability import health, scrape
from gatehouse.observability.access_log import AccessLog
from gatehouse.selfservice.login import http as login
from gatehouse.selfservice.mfa import http as mfa
from gatehouse.selfservice.passkeys import http as passkeys
from gatehouse.selfservice.profile import http as profile
from gatehouse.selfservice.recovery import http as recovery
from gatehouse.selfservice.registration import http as registration
from gatehouse.selfservice.sessions import http as sessions
from gatehouse.ui import routes as pages
from gatehouse.web import docs, errors
from gatehouse.web.hot import HotRoutes
from gatehouse.web.middleware import BodyLimit, ClientAddress, SecurityHeaders

log = logging.getLogger(__name__)
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def create_app(
    services: Services, background: Sequence[Background] = (), close_services: bool = True
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(role(stop)) for role in background]
        try:
            yield
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("background role failed: %r", result)
            if close_services:
                await services.aclose()

    app = FastAPI(
        title="Gatehouse",
        version=__version__,
        summary="User onboarding and identity: registration with codes, login, profiles.",
        lifespan=lifespan,
        # FastAPI's own telemetry off: with it on, it looks for a provider (reading the
        # environment) on every request, 4 % of a refresh. The access log makes the server
        # span when Gatehouse traces (observability/access_log.py), and counts every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: docs.install serves them.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.services = services
    settings = services.settings
    # The last added runs outermost: security headers wrap every answer, 413s included, and
    # the hot routes run inside all three.
    app.add_middleware(HotRoutes, router=app.router)
    app.add_middleware(ClientAddress)  # for the audit records of the flows inside
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    # Outermost: every answer gets its X-Request-ID and one access-log line.
    app.add_middleware(
        AccessLog,
        router=app.router,
        trusted_proxies=settings.trusted_proxies,
        metrics=services.metrics,
        tracer=services.tracer,
    )
    errors.install(app)
    docs.install(app)
    for flow in (registration, login, sessions, profile, recovery, mfa, passkeys):
        app.include_router(flow.router)
    app.include_router(health.router)
    app.include_router(scrape.router)
    app.include_router(jobs.router)
    app.include_router(
        admin.router, include_in_schema=bool(settings.admin_token.get_secret_value())
    )
    pages.install(app)  # the self-service pages: /, /ui/..., /ui/static/...
    return app
