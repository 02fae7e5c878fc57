"""`GET /metrics`: the process's metrics in Prometheus' text format (every api worker's added up
when there are several). Not in the OpenAPI document: it is for Prometheus, not for clients."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from gatehouse.bootstrap import Services
from gatehouse.web.deps import services

router = APIRouter(tags=["observability"])
Svc = Annotated[Services, Depends(services)]


@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc) -> Response:
    # Reading the workers' files takes a moment: not on the event loop.
    body, content_type = await asyncio.to_thread(svc.metrics.exposition)
    return Response(body, media_type=content_type, headers={"cache-control": "no-store"})
