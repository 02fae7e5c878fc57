"""The error envelope's schema and the error answers every route documents in OpenAPI."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ErrorOut(BaseModel):
    """The error envelope every failure answers with."""

    status: Literal["error"]
    message: str
    code: str
    errors: list[dict[str, Any]]


_MEANING = {
    400: "Malformed request (not JSON, not an object) or a wrong or expired code",
    401: "Bad credentials, or a missing, invalid, expired or revoked token",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict with an existing account",
    413: "Request body too large",
    422: "Invalid fields, listed in `errors`",
    429: "Rate limited; see the Retry-After header",
    503: "A dependency is unavailable; retry after Retry-After",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": meaning} for status, meaning in _MEANING.items()
}
