"""The envelopes' schemas and the error answers each route documents in OpenAPI."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Out(BaseModel):
    """An answer's model: exactly the fields a route sends, so OpenAPI (and schemathesis, which
    checks answers against it) says what a client gets. Routes name their model as
    `response_model` for the document only: they return a ready `JSON` response, which FastAPI
    passes on without validating or serialising it again."""

    model_config = ConfigDict(extra="forbid")


class Envelope(Out, Generic[T]):
    """The success envelope; `data` is the route's own model."""

    status: Literal["success"]
    message: str
    data: T


class NoData(Out):
    """The `data` of an answer with nothing more to say: `{}`."""


class Problem(BaseModel):
    """One thing wrong with a request: the field (or header, or dependency) and why."""

    field: str
    message: str
    type: str | None = None  # pydantic's error type, in the 422s of a request's schema


class ErrorOut(BaseModel):
    """The error envelope every failure answers with."""

    status: Literal["error"]
    message: str
    code: str
    errors: list[Problem]


_MEANING = {
    400: "Malformed request (not JSON, not an object) or a wrong or expired code",
    401: "Bad credentials, or a missing, invalid, expired or revoked token",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict with an existing account",
    413: "Request body too large",
    415: "Body not sent as JSON: send it with Content-Type: application/json",
    422: "Invalid fields, listed in `errors`",
    429: "Rate limited; see the Retry-After header",
    503: "A dependency is unavailable; retry after Retry-After",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": meaning} for status, meaning in _MEANING.items()
}
# Every route with a JSON body can be refused before its own checks run.
BODY_ERRORS = (400, 413, 415, 422)


def error_answers(
    *statuses: int, meaning: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error statuses it can give (with `meaning`, its own words for
    some), and the 500 any route may give when something unexpected fails, each with the error
    envelope. A route with parameters lists 422 even where they cannot fail: FastAPI would
    otherwise document its own 422 body, which Gatehouse never answers."""
    said = {**_MEANING, **(meaning or {})}
    return {
        status: {"model": ErrorOut, "description": said.get(status, HTTPStatus(status).phrase)}
        for status in sorted({*statuses, *(meaning or {}), 500})
    }
