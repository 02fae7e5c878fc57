"""Liveness, readiness (each dependency, honestly), the schema check and the JWKS document."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic.json_schema import SkipJsonSchema

from gatehouse.bootstrap import Services
from gatehouse.errors import Unavailable
from gatehouse.web.deps import services
from gatehouse.web.responses import JSON, failure, success
from gatehouse.web.schemas import Envelope, ErrorOut, Out, error_answers

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]
# Each dependency gets this long, all of them at once: a hung one answers "down" in bounded time
# instead of holding the load balancer's probe (and hiding which one hangs).
CHECK_TIMEOUT = 3.0


class LiveData(Out):
    status: Literal["live"]


class ReadyData(Out):
    """Each dependency checked (database, and Redis, Kafka, Socket.IO when configured): up."""

    checks: dict[str, Literal["up"]]


class SchemaData(Out):
    """Migration revisions of the database and of the code, and what of the code's schema is
    missing (`missing_columns` as `table.column`)."""

    current: list[str]
    head: list[str]
    missing_tables: list[str]
    missing_columns: list[str]


class SchemaNotReadyOut(ErrorOut):
    """The schema check's 503: `not_ready` with the report in `data`, or `unavailable` without
    it when the database did not answer."""

    data: SchemaData | SkipJsonSchema[None] = None  # absent, never null


class Jwk(Out):
    """One public signing key (RFC 7517; Ed25519 keys as RFC 8037 OKP)."""

    kty: str
    crv: str
    kid: str
    use: str
    alg: str
    x: str


class Jwks(Out):
    """The JWKS document: every access-token verification key, by `kid`."""

    keys: list[Jwk]


@router.get("/health/live", response_model=Envelope[LiveData], responses=error_answers())
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


@router.get(
    "/health/ready",
    response_model=Envelope[ReadyData],
    responses=error_answers(503, meaning={503: "Not ready: `errors` names each dependency down"}),
)
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


@router.get(
    "/health/schema",
    response_model=Envelope[SchemaData],
    responses={
        **error_answers(),
        503: {"model": SchemaNotReadyOut, "description": "Schema not the code's, or no database"},
    },
)
async def schema(svc: Svc) -> JSON:
    """Seed 004's structure check: the database's migration revision is the code's head and every
    table and column of the code's schema exists. 200, else 503 `not_ready`, both with
    `data: {current, head, missing_tables, missing_columns}`."""
    try:
        report = await asyncio.wait_for(svc.schema.report(), CHECK_TIMEOUT)
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


@router.get("/.well-known/jwks.json", response_model=Jwks, responses=error_answers())
async def jwks(svc: Svc) -> JSON:
    return JSON(svc.ctx.tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})
