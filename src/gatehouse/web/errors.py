"""The one table from exceptions to status codes and envelopes; routers hold no try/except."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from gatehouse import errors
from gatehouse.web.responses import JSON, failure

log = logging.getLogger(__name__)
METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")

STATUS: dict[type[errors.GatehouseError], int] = {
    errors.InvalidInput: 422,
    errors.InvalidCode: 400,
    errors.InvalidCredentials: 401,
    errors.InvalidToken: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}


def _status_of(exc: errors.GatehouseError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def on_gatehouse_error(_request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, errors.GatehouseError)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.InvalidToken):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, errors.Unavailable):
        headers["Retry-After"] = "5"
        log.warning("dependency unavailable: %s (%s)", exc.message, exc.__cause__)
    return failure(_status_of(exc), exc.code, exc.message, exc.errors, headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


async def on_validation_error(_request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return failure(400, "malformed_request", "Request body is not valid JSON")
    # FastAPI decodes a body as JSON only when its Content-Type says JSON; otherwise the route's
    # schema meets the raw bytes. So a JSON object sent as text/plain (or with no type at all)
    # is refused for its type, not as "not an object".
    if any(p.get("loc") == ("body",) and isinstance(p.get("input"), bytes) for p in problems):
        return failure(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json",
        )
    if any(
        p.get("loc") == ("body",) and p.get("type") == "model_attributes_type" for p in problems
    ):
        return failure(400, "malformed_request", "Request body must be a JSON object")
    if any(p.get("loc") == ("body",) and p.get("type") == "missing" for p in problems):
        return failure(400, "malformed_request", "Request body is required")
    details = [
        {
            "field": _field(tuple(p.get("loc", ()))),
            "message": p.get("msg", "invalid"),
            "type": p.get("type", "invalid"),
        }
        for p in problems
    ]
    return failure(422, "invalid_input", "Some fields are invalid", details)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette names only the first route's, and
    FastAPI (0.165) keeps included routers behind one entry each, so each method is matched."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


async def on_http_error(request: Request, exc: Exception) -> JSON:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        exc.headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    return failure(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> JSON:
    # Starlette answers a 500 from outside every middleware, the access log's included: the id
    # that middleware gave the request comes through `request.state`, to be logged and answered.
    rid = getattr(request.state, "request_id", None)
    log.exception("unhandled error (request %s)", rid, exc_info=exc)
    headers = {"X-Request-ID": rid} if rid else None
    return failure(500, "internal_error", "Internal server error", headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GatehouseError, on_gatehouse_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
