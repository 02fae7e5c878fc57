"""The admin API's pages: `?cursor=` is opaque to clients (base64url of a small JSON object that
says where the last page ended) and `next_cursor` is null once there is nothing after."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from gatehouse.errors import InvalidInput

MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> dict[str, Any]:
    """Where a page starts: {} for the first page; InvalidInput for a cursor we did not make."""
    if not cursor:
        return {}
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        position = None
    if not isinstance(position, dict):
        raise InvalidInput(
            "Invalid cursor", errors=[{"field": "cursor", "message": "give a next_cursor back"}]
        )
    return position


def limited(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            "Invalid limit", errors=[{"field": "limit", "message": f"1 to {MAX_LIMIT}"}]
        )
    return limit
