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
) -> JSON:
    body = {"status": "error", "message": message, "code": code, "errors": errors or []}
    return JSON(body, status_code=status, headers=headers)
