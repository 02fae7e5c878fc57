"""The hot routes: endpoints marked `@hot`, answered before FastAPI's router from its own table."""

# Each is little more than one database round trip, and FastAPI's routing, dependency solving and
# response handling cost as much CPU as the rest of the request (issue 6's profile). So a request
# that is plainly well formed (a JSON object that the route's own schema accepts) runs the same
# endpoint with the same dependencies, guard, envelope and error table, here. Anything else
# (another content type, JSON that is not an object, fields the schema refuses) goes on to
# FastAPI untouched, its body replayed, so every error a client can provoke is FastAPI's answer.
#
# Nothing is written twice: the table is read from the router once, when the middleware stack is
# built (the first ASGI call: start-up under a server). A marked route needing anything this path
# cannot give (a new Depends, a query or header parameter, background tasks, scopes...) stops the
# app right there, naming the route and the parameter, rather than being answered without it.

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson
from fastapi import routing
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.errors import GatehouseError
from gatehouse.web import deps, errors

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])
Call = Callable[..., Awaitable[Any]]
_MARK = "__gatehouse_hot__"
# The dependencies this path provides, each called as FastAPI calls it: with the request alone.
KNOWN: tuple[Callable[..., Any], ...] = (deps.ctx, deps.bearer_token)
# Dependant fields that say how FastAPI runs a callable (caching, yield lifetime), not what it
# needs; `_plan` reads body_params, dependencies and request_param_name. Any other field set
# (query, header, cookie or path parameters, scopes, background tasks, a concurrency limit, and
# whatever a later FastAPI adds) is something this path would silently skip.
_INERT = frozenset({"name", "call", "use_cache", "path", "scope"})
_READ = frozenset({"body_params", "dependencies", "request_param_name"})


def hot(endpoint: Endpoint) -> Endpoint:
    """Mark a route's endpoint to be answered by HotRoutes; declare the route as usual."""
    setattr(endpoint, _MARK, True)
    return endpoint


@dataclasses.dataclass(frozen=True, slots=True)
class HotRoute:
    """How to call one marked endpoint by keyword, worked out once from its dependant."""

    name: str  # "POST /api/auth/refresh", for messages
    endpoint: Call
    schema: type[BaseModel] | None  # the body's model, None for no body
    body_name: str
    request_name: str | None  # the endpoint's own Request parameter
    # Each dependency once (FastAPI caches them per request), and the endpoint parameters
    # that receive its value. Each takes the Request alone, in a parameter that can be given
    # by position: the same call as FastAPI's by keyword, without a dict a call.
    steps: tuple[tuple[Call, tuple[str, ...]], ...]
    overrides_from: Any  # the app: while it overrides dependencies, FastAPI answers

    async def answer(self, request: Request, kwargs: dict[str, Any]) -> Response:
        if self.request_name is not None:
            kwargs[self.request_name] = request
        for call, names in self.steps:
            value = await call(request)
            for name in names:
                kwargs[name] = value
        response: Response = await self.endpoint(**kwargs)
        return response


def table(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], HotRoute]:
    """(method, path) -> HotRoute for every marked route of `routes`, included routers too."""
    flat = list(_flatten(routes))
    found: dict[tuple[str, str], HotRoute] = {}
    for route in flat:
        if not isinstance(getattr(route, "original_route", route), routing.APIRoute):
            continue
        if not getattr(route.endpoint, _MARK, False):
            continue
        for method in sorted(route.methods):
            name = f"{method} {route.path}"
            _first_match(flat, route, method, name)
            found[(method, route.path)] = _plan(route, name)
    return found


def _flatten(routes: Iterable[BaseRoute]) -> Iterable[Any]:
    # FastAPI 0.137 stopped copying an included router's routes into the app's list; this walks
    # them, with their prefix and the include's dependencies applied, as its OpenAPI does.
    contexts: Callable[[Iterable[BaseRoute]], Iterable[Any]] | None = getattr(
        routing, "iter_route_contexts", None
    )
    return routes if contexts is None else contexts(routes)


def _first_match(flat: list[Any], route: Any, method: str, name: str) -> None:
    """The router answers with the first route that matches: it must be this one."""
    for candidate in flat:
        probe = {"type": "http", "method": method, "path": route.path, "root_path": ""}
        if candidate.matches({**probe, "headers": []})[0] == Match.FULL:
            if candidate is not route:
                earlier = getattr(candidate, "name", None) or getattr(candidate, "path", candidate)
                _refuse(name, f"an earlier route ({earlier}) answers it")
            return
    _refuse(name, "the router does not answer it")


def _plan(route: Any, name: str) -> HotRoute:
    dependant: Dependant = route.dependant
    if not inspect.iscoroutinefunction(route.endpoint):
        _refuse(name, "the endpoint must be an `async def`")
    # FastAPI sends a returned Response as it is (its response_model only documents it);
    # anything else it would serialise, which this path does not.
    answer = typing.get_type_hints(route.endpoint).get("return")
    if not (isinstance(answer, type) and issubclass(answer, Response)):
        _refuse(name, "the endpoint must be annotated to return a Response")
    if getattr(route, "max_body_size", None) is not None:
        _refuse(name, "the route's own max_body_size is not enforced here")
    _only_known_fields(dependant, name, "the endpoint")
    schema, body_name = _body(dependant, name)
    return HotRoute(
        name=name,
        endpoint=route.endpoint,
        schema=schema,
        body_name=body_name,
        request_name=dependant.request_param_name,
        steps=_steps(dependant, name),
        overrides_from=route.dependency_overrides_provider,
    )


def _steps(dependant: Dependant, name: str) -> tuple[tuple[Call, tuple[str, ...]], ...]:
    steps: dict[object, tuple[Call, list[str]]] = {}
    for sub in dependant.dependencies:
        call, param = sub.call, sub.request_param_name
        label = f"dependency {sub.name or '(route level)'} = Depends({_name_of(call)})"
        if call is None or call not in KNOWN or not inspect.iscoroutinefunction(call):
            _refuse(name, f"{label} has no fast path")
        _only_known_fields(sub, name, label)
        if sub.body_params or sub.dependencies or param is None or not _positional(call, param):
            _refuse(name, f"{label} must take the Request alone, by position or keyword")
        key = call if sub.use_cache else object()  # FastAPI calls a cached dependency once
        _, names = steps.setdefault(key, (call, []))
        if sub.name is not None:  # a route-level dependency runs for its effect only
            names.append(sub.name)
    return tuple((call, tuple(names)) for call, names in steps.values())


def _positional(call: Call, param: str) -> bool:
    parameter = inspect.signature(call).parameters.get(param)
    return parameter is not None and parameter.kind is parameter.POSITIONAL_OR_KEYWORD


def _only_known_fields(dependant: Dependant, name: str, what: str) -> None:
    for field in dataclasses.fields(dependant):
        value = getattr(dependant, field.name)
        if field.name in _INERT or field.name in _READ or not value:
            continue
        shown = [getattr(p, "name", p) for p in value] if isinstance(value, list) else value
        _refuse(name, f"{what} needs {field.name}={shown!r}, which the fast path does not give")


def _body(dependant: Dependant, name: str) -> tuple[type[BaseModel] | None, str]:
    if not dependant.body_params:
        return None, ""
    [field, *more] = dependant.body_params
    model = field.field_info.annotation
    embedded = getattr(field.field_info, "embed", False)
    if more or embedded or not (isinstance(model, type) and issubclass(model, BaseModel)):
        shown = [p.name for p in dependant.body_params]
        _refuse(name, f"the body must be one pydantic model, not embedded; got {shown!r}")
    return model, field.name


def _name_of(call: object) -> str:
    return str(getattr(call, "__qualname__", call))


def _refuse(name: str, problem: str) -> typing.NoReturn:
    raise RuntimeError(
        f"hot route {name}: {problem}; unmark it (@hot) or teach gatehouse.web.hot to provide it"
    )


class HotRoutes:
    """ASGI middleware in front of the FastAPI router (inside the security headers, the body
    limit and CORS, which apply to these answers as to every other)."""

    def __init__(self, app: ASGIApp, *, router: routing.APIRouter):
        self.app = app
        self.routes = table(router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if route is None or _overridden(route):
            await self.app(scope, receive, send)
            return
        kwargs = await plain_kwargs(route, scope, receive, send, self.app)
        if kwargs is not None:
            await respond(route, kwargs, scope, receive, send)


async def plain_kwargs(
    route: HotRoute, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp
) -> dict[str, Any] | None:
    """The route's keyword arguments from a plainly well-formed body; None when the request
    went to `fallback` instead (FastAPI's answer, errors included, on the same bytes) or the
    client left before its body came."""
    if route.schema is None:
        return {}
    raw, complete = await read_body(receive)
    if not complete:
        return None  # nobody to answer
    body = well_formed(scope, raw, route.schema)
    if body is None:
        await fallback(scope, replay(raw, receive), send)
        return None
    return {route.body_name: body}


async def respond(
    route: HotRoute,
    kwargs: dict[str, Any],
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    unexpected: bool = False,
) -> None:
    """The route's answer, a refusal answered from the error table; with `unexpected`, any
    other exception answered as the app's last handler answers it (for a caller outside the
    app's own error middleware)."""
    request = Request(scope, receive)
    try:
        response = await route.answer(request, kwargs)
    except GatehouseError as exc:
        response = await errors.on_gatehouse_error(request, exc)
    except Exception as exc:
        if not unexpected:
            raise
        response = await errors.on_unexpected(request, exc)
    await response(scope, receive, send)


def _overridden(route: HotRoute) -> bool:
    # A test's dependency_overrides apply to FastAPI's solving only: honour them by stepping aside.
    return bool(getattr(route.overrides_from, "dependency_overrides", None))


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, and whether all of it came (not when the client left first)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def well_formed(scope: Scope, raw: bytes, schema: type[BaseModel]) -> BaseModel | None:
    """The body as `schema`, if it is a JSON object (sent as JSON) that the schema accepts."""
    if not _json_content(scope):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    try:
        return schema.model_validate(data)
    except ValidationError:
        return None


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media == b"application/json")
    return False


def replay(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read once, then defers to the client's."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return again
