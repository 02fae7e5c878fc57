"""The one response envelope, serialised with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def success(message: str, data: dict[str, Any] | None = None, status: int = 200) -> JSON:
    return JSON({"status": "success", "message": message, "data": data or {}}, status_code=status)


def failure(
    status: int,
    code: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> JSON:
    body: dict[str, Any] = {"status": "error", "message": message, "code": code}
    body["errors"] = errors or []
    if data is not None:  # a report that failed (health) keeps its details in `data`
        body["data"] = data
    return JSON(body, status_code=status, headers=headers)
