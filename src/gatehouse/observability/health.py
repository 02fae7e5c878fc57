"""Liveness, readiness (each dependency, honestly), the schema check and the JWKS document."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from gatehouse.bootstrap import Services
from gatehouse.errors import Unavailable
from gatehouse.storage.migrate import schema_report
from gatehouse.web.deps import services
from gatehouse.web.responses import JSON, failure, success
from gatehouse.web.schemas import ERRORS

router = APIRouter(tags=["health"], responses={503: ERRORS[503]})
Svc = Annotated[Services, Depends(services)]
# Each dependency gets this long, all of them at once: a hung one answers "down" in bounded time
# instead of holding the load balancer's probe (and hiding which one hangs).
CHECK_TIMEOUT = 3.0


@router.get("/health/live")
async def live() -> JSON:
    return success("live", {"status": "live"})


async def _check(check: Any) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
        return "up"
    except TimeoutError:
        return f"down: no answer in {CHECK_TIMEOUT:g}s"
    except Exception as exc:
        return f"down: {type(exc).__name__}"


@router.get("/health/ready")
async def ready(svc: Svc) -> JSON:
    """200 when every dependency answers (database, and Redis, Kafka, the Socket.IO
    subscription when configured); 503 `not_ready` naming each one that does not."""
    names = list(svc.checks)
    results = await asyncio.gather(*(_check(svc.checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    if all(r == "up" for r in results):
        return success("ready", {"checks": report})
    failed = [{"field": n, "message": r} for n, r in report.items() if r != "up"]
    return failure(503, "not_ready", "Some dependencies are unavailable", failed)


@router.get("/health/schema")
async def schema(svc: Svc) -> JSON:
    """Seed 004's structure check: the database's migration revision is the code's head and every
    table and column of the code's schema exists. 200, else 503 `not_ready`, both with
    `data: {current, head, missing_tables, missing_columns}`."""
    try:
        report = await asyncio.wait_for(schema_report(svc.engine), CHECK_TIMEOUT)
    except TimeoutError as exc:
        raise Unavailable("Database did not answer in time") from exc
    data = report.as_dict()
    if report.ok:
        return success("schema at head", data)
    problems: list[dict[str, Any]] = []
    if not report.at_head:
        problems.append(
            {
                "field": "migrations",
                "message": f"database at {report.current or 'no revision'}, code at {report.head}"
                " (run `gatehouse migrate`)",
            }
        )
    problems += [{"field": t, "message": "missing table"} for t in report.missing_tables]
    problems += [{"field": c, "message": "missing column"} for c in report.missing_columns]
    return failure(503, "not_ready", "The database schema is not the code's", problems, data=data)


@router.get("/.well-known/jwks.json")
async def jwks(svc: Svc) -> JSON:
    return JSON(svc.ctx.tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})
