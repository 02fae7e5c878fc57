"""Liveness, readiness (each dependency, honestly) and the JWKS document."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from gatehouse.bootstrap import Services
from gatehouse.entrypoints.api.deps import services
from gatehouse.entrypoints.api.responses import JSON, failure, success
from gatehouse.entrypoints.api.schemas import ERRORS

router = APIRouter(tags=["health"], responses={503: ERRORS[503]})
Svc = Annotated[Services, Depends(services)]
CHECK_TIMEOUT = 3.0


@router.get("/health/live")
async def live() -> JSON:
    return success("live", {"status": "live"})


@router.get("/health/ready")
async def ready(svc: Svc) -> JSON:
    async def run(check: Any) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
            return "up"
        except Exception as exc:
            return f"down: {type(exc).__name__}"

    names = list(svc.checks)
    results = await asyncio.gather(*(run(svc.checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    if all(r == "up" for r in results):
        return success("ready", {"checks": report})
    failed = [{"field": n, "message": r} for n, r in report.items() if r != "up"]
    return failure(503, "not_ready", "Some dependencies are unavailable", failed)


@router.get("/.well-known/jwks.json")
async def jwks(svc: Svc) -> JSON:
    return JSON(svc.ctx.tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})
