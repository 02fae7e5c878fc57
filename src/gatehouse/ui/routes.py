"""The self-service pages as one door (DESIGN 10): `install(app)` adds their routes, their
assets and the kit they share, built once."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gatehouse.ui import account, api, assets, entry
from gatehouse.ui.kit import Kit, PageRefusal


async def _refusal(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageRefusal)
    return exc.response


def install(app: FastAPI) -> None:
    """`/`, `/ui/...` and `/ui/api/...`, none of them in the OpenAPI document (they are pages)."""
    app.state.ui = Kit.build(app.state.services)
    app.add_exception_handler(PageRefusal, _refusal)
    for door in (entry, account, api, assets):
        app.include_router(door.router)
