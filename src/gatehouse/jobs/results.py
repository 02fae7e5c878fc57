"""A job's answer, `{success, message, data}`, and the type of the handlers that make it.

Refusals add `code` and `errors`; a job that acted on a known account adds `user_id`, so that
its result may be pushed to that account's room."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from gatehouse.errors import GatehouseError
from gatehouse.selfservice.context import FlowContext

Result = dict[str, Any]
# (the job data's schema, the handler: context, validated data, job id -> result)
Handler = tuple[type[BaseModel], Callable[[FlowContext, Any, str | None], Awaitable[Result]]]


def ok(message: str, data: dict[str, Any] | None = None, user_id: str | None = None) -> Result:
    result: Result = {"success": True, "message": message, "data": data or {}}
    if user_id:
        result["user_id"] = user_id
    return result


def refusal(exc: GatehouseError) -> Result:
    return {
        "success": False,
        "message": exc.message,
        "code": exc.code,
        "errors": exc.errors,
        "data": {},
    }
