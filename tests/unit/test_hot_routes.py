"""The hot routes (web/hot.py): read from the router, refused when they need what the fast path
cannot give, and answering exactly as FastAPI's routes do (each request sent twice, through the
hot layer and with its table emptied); the well-formed ones are answered before the router."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, BackgroundTasks, Body, Depends, FastAPI, Header, Request, Security
from fastapi.routing import APIRoute, iter_route_contexts

from gatehouse.selfservice.profile import http as profile_http
from gatehouse.selfservice.registration.schemas import VerifyOtpIn
from gatehouse.selfservice.sessions.schemas import RefreshIn
from gatehouse.web import deps, hot
from gatehouse.web.deps import Ctx, Token
from gatehouse.web.responses import JSON, success

from .api_client import EMAIL, PASSWORD, Api

HEADERS = (
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "content-security-policy",
    "x-content-type-options",
    "strict-transport-security",
)


def answer(response: httpx.Response) -> tuple[int, Any, dict[str, str | None]]:
    return (
        response.status_code,
        response.json(),
        {name: response.headers.get(name) for name in HEADERS},
    )


def app_of(api: Api) -> FastAPI:
    app: FastAPI = api.client._transport.app  # type: ignore[attr-defined]
    return app


def hot_layer(api: Api) -> hot.HotRoutes:
    return hot_layer_of(app_of(api))


def hot_layer_of(app: FastAPI) -> hot.HotRoutes:
    """The app's HotRoutes middleware (its stack built, as the first request would)."""
    app.middleware_stack = app.middleware_stack or app.build_middleware_stack()
    layer: Any = app.middleware_stack
    while not isinstance(layer, hot.HotRoutes):
        layer = layer.app
    return layer


def count_router_calls(layer: hot.HotRoutes, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the layer passes on to FastAPI's router, from now on."""
    calls: list[str] = []
    inner = layer.app

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await inner(scope, receive, send)

    monkeypatch.setattr(layer, "app", counting)
    return calls


async def both_ways(
    api: Api, monkeypatch: pytest.MonkeyPatch, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    hot_answer = await api.client.request(method, path, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(hot_layer(api), "routes", {})
        router_answer = await api.client.request(method, path, **kwargs)
    return hot_answer, router_answer


JSON_TYPE = {"content-type": "application/json"}
LOGIN = "/api/auth/login"
REFRESH_CASES: list[dict[str, Any]] = [
    {"json": {"refresh_token": "not-a-token"}},
    {"json": {"refresh_token": ""}},
    {"json": {"refresh_token": "x" * 513}},
    {"json": {"refresh_token": 5}},
    {"json": {"refresh_token": "t", "extra": 1}},
    {"json": {}},
    {"json": ["refresh_token"]},
    {"content": b"{not json", "headers": JSON_TYPE},
    {"content": b"", "headers": JSON_TYPE},
    {"content": b'{"refresh_token": "t"}', "headers": {"content-type": "text/plain"}},
    {"content": b'{"refresh_token": "t"}'},
]
VERIFY_CASES: list[dict[str, Any]] = [
    {"json": {"email": "nobody@example.com", "otp": "123456"}},
    {"json": {"email": "not-an-email", "otp": "123456"}},
    {"json": {"email": "nobody@example.com"}},
    {"json": {"email": "nobody@example.com", "otp": "1" * 17}},
    {"json": {"email": "nobody@example.com", "otp": 123456}},
    {"content": b"null", "headers": JSON_TYPE},
]
LOGIN_CASES: list[dict[str, Any]] = [
    {"json": {"email": "nobody@example.com", "password": "wrong password"}},
    {"json": {"email": "not-an-email", "password": "x"}},
    {"json": {"email": "nobody@example.com"}},
    {"json": {"email": "nobody@example.com", "password": 5}},
    {"json": {"email": "nobody@example.com", "password": "x" * 5000}},
    {"content": b"[]", "headers": JSON_TYPE},
]
PROFILE_HEADERS: list[dict[str, str]] = [
    {},
    {"authorization": "Bearer "},
    {"authorization": "Basic abc"},
    {"authorization": "Bearer not.a.token"},
]


@pytest.mark.parametrize(
    ("path", "case"),
    [("/api/auth/refresh", case) for case in REFRESH_CASES]
    + [("/api/auth/verify-otp", case) for case in VERIFY_CASES]
    + [("/api/auth/login", case) for case in LOGIN_CASES],
)
async def test_refusals_answer_as_the_router_does(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str, case: dict[str, Any]
) -> None:
    hot_answer, router_answer = await both_ways(api, monkeypatch, "POST", path, **case)
    assert hot_answer.status_code >= 400
    assert answer(hot_answer) == answer(router_answer)


@pytest.mark.parametrize("headers", PROFILE_HEADERS)
async def test_profile_refusals_answer_as_the_router_does(
    api: Api, monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]
) -> None:
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "GET", "/api/auth/profile", headers=headers
    )
    assert hot_answer.status_code == 401
    assert answer(hot_answer) == answer(router_answer)


async def test_a_sign_in_answers_the_same_both_ways(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing account's wrong password (a failure written) and right one (a session)."""
    await api.signed_up()
    wrong = {"json": {"email": EMAIL, "password": "not the password"}}
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "POST", "/api/auth/login", **wrong
    )
    assert hot_answer.status_code == 401
    assert answer(hot_answer) == answer(router_answer)
    right = {"json": {"email": EMAIL, "password": PASSWORD}}
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "POST", "/api/auth/login", **right
    )
    assert hot_answer.status_code == router_answer.status_code == 200

    def secrets_out(response: httpx.Response) -> Any:
        data = response.json()["data"]
        return {**response.json(), "data": {**data, "token": None, "refresh_token": None}}

    assert secrets_out(hot_answer) == secrets_out(router_answer)


async def test_a_signed_in_profile_reads_the_same_both_ways(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.signed_up()
    session = await api.logged_in()
    headers = {"authorization": f"Bearer {session['token']}"}
    hot_answer, router_answer = await both_ways(
        api, monkeypatch, "GET", "/api/auth/profile", headers=headers
    )
    assert hot_answer.status_code == 200
    assert hot_answer.json()["data"]["user"]["email"] == EMAIL
    assert answer(hot_answer) == answer(router_answer)


async def test_well_formed_requests_never_reach_the_router(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign-up verification, sign-in, refresh and profile read succeed with FastAPI's router
    refusing every request; a malformed one still reaches it (and gets its answer)."""
    await api.post("/api/auth/register", {"name": "Ada", "email": EMAIL, "password": PASSWORD})
    [code] = await api.sent_codes(EMAIL)
    router_calls = count_router_calls(hot_layer(api), monkeypatch)
    verified = await api.post("/api/auth/verify-otp", {"email": EMAIL, "otp": code})
    assert verified.status_code == 201, verified.text
    session = await api.logged_in()
    assert router_calls == []
    refreshed = await api.post("/api/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["data"]["token"]
    profile = await api.client.get(
        "/api/auth/profile", headers={"authorization": f"Bearer {token}"}
    )
    assert profile.status_code == 200, profile.text
    assert router_calls == []

    malformed = await api.post("/api/auth/refresh", {"refresh_token": ""})
    assert malformed.status_code == 422
    assert router_calls == ["/api/auth/refresh"]


async def test_the_table_is_the_routers_marked_routes(api: Api) -> None:
    """Exactly the marked routes, with the router's paths, methods and endpoints, each
    called with the body, the flow context and the token the router's dependant names."""
    layer = hot_layer(api)
    assert set(layer.routes) == {
        ("GET", "/api/auth/profile"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/refresh"),
        ("POST", "/api/auth/verify-otp"),
        ("POST", "/api/auth/passkeys/login/options"),
        ("POST", "/api/auth/passkeys/login/verify"),
    }
    endpoints = {
        (method, route.path): route.endpoint
        for route in iter_route_contexts(app_of(api).router.routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods
    }
    for key, route in layer.routes.items():
        assert route.endpoint is endpoints[key]
    profile = layer.routes[("GET", "/api/auth/profile")]
    assert (profile.schema, profile.request_name) == (None, "request")
    assert list(profile.steps) == [
        (deps.ctx, ("c",)),
        (deps.bearer_token, ("token",)),
    ]
    refresh = layer.routes[("POST", "/api/auth/refresh")]
    assert (refresh.schema, refresh.body_name, refresh.request_name) == (
        RefreshIn,
        "body",
        "request",
    )
    assert layer.routes[("POST", "/api/auth/verify-otp")].schema is VerifyOtpIn


async def test_dependency_overrides_send_the_hot_routes_to_the_router(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI applies an override while it solves a route: the hot path steps aside."""
    router_calls = count_router_calls(hot_layer(api), monkeypatch)
    assert (await api.client.get("/api/auth/profile")).status_code == 401
    assert router_calls == []

    async def no_token() -> str:
        return "overridden"

    monkeypatch.setitem(app_of(api).dependency_overrides, deps.bearer_token, no_token)
    assert (await api.client.get("/api/auth/profile")).status_code == 401
    assert router_calls == ["/api/auth/profile"]


async def test_the_endpoint_is_called_by_keyword_with_what_it_declares() -> None:
    """Parameters in any order and under any name, a route-level dependency run once (as
    FastAPI caches it) even where a parameter needs it too; answered before the router."""
    context = object()
    seen: dict[str, Any] = {}
    app = FastAPI()
    app.state.services = SimpleNamespace(ctx=context)
    router = APIRouter()

    @router.post("/x", dependencies=[Depends(deps.bearer_token)])
    @hot.hot
    async def endpoint(req: Request, who: Token, payload: RefreshIn, flow: Ctx) -> JSON:
        seen.update(req=req, who=who, payload=payload, flow=flow)
        return success("x", {"who": who}, status=201)

    app.include_router(router)
    app.add_middleware(hot.HotRoutes, router=app.router)
    layer = hot_layer_of(app)
    assert list(layer.routes[("POST", "/x")].steps) == [
        (deps.bearer_token, ("who",)),
        (deps.ctx, ("flow",)),
    ]

    async def no_router(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['path']} reached the router")

    layer.app = no_router
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/x", json={"refresh_token": "r"}, headers={"authorization": "Bearer abc"}
        )
    assert (response.status_code, response.json()["data"]) == (201, {"who": "abc"})
    assert seen["flow"] is context
    assert seen["payload"] == RefreshIn(refresh_token="r")
    assert isinstance(seen["req"], Request)


async def tenant(request: Request) -> str:
    return request.headers.get("x-tenant", "")


def extra_dependency(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx, t: Annotated[str, Depends(tenant)]) -> JSON:
        return success("x")


def query_parameter(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx, page: int = 1) -> JSON:
        return success("x")


def header_parameter(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx, x_trace: Annotated[str | None, Header()] = None) -> JSON:
        return success("x")


def background_tasks(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx, tasks: BackgroundTasks) -> JSON:
        return success("x")


def security_scopes(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(token: Annotated[str, Security(deps.bearer_token, scopes=["a"])]) -> JSON:
        return success("x")


def path_parameter(router: APIRouter) -> None:
    @router.get("/x/{id}")
    @hot.hot
    async def endpoint(id: str, c: Ctx) -> JSON:
        return success("x")


def embedded_body(router: APIRouter) -> None:
    @router.post("/x")
    @hot.hot
    async def endpoint(body: Annotated[RefreshIn, Body(embed=True)], c: Ctx) -> JSON:
        return success("x")


def sync_endpoint(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    def endpoint(c: Ctx) -> JSON:
        return success("x")


def returns_a_dict(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx) -> dict[str, str]:
        return {}


def shadowed(router: APIRouter) -> None:
    @router.get("/{anything}")
    async def first(anything: str) -> JSON:
        return success("first")

    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx) -> JSON:
        return success("x")


def the_real_profile_route_with_a_new_dependency(router: APIRouter) -> None:
    router.get("/x", dependencies=[Depends(tenant)])(profile_http.read_profile)


def plain(router: APIRouter) -> None:
    @router.get("/x")
    @hot.hot
    async def endpoint(c: Ctx) -> JSON:
        return success("x")


NO_FAST_PATH = "has no fast path; unmark it (@hot) or teach gatehouse.web.hot to provide it"


@pytest.mark.parametrize(
    ("declare", "include", "named"),
    [
        (extra_dependency, {}, f"GET /api/x: dependency t = Depends(tenant) {NO_FAST_PATH}"),
        (
            the_real_profile_route_with_a_new_dependency,
            {},
            f"GET /api/x: dependency (route level) = Depends(tenant) {NO_FAST_PATH}",
        ),
        (
            plain,
            {"dependencies": [Depends(tenant)]},
            f"GET /api/x: dependency (route level) = Depends(tenant) {NO_FAST_PATH}",
        ),
        (query_parameter, {}, "GET /api/x: the endpoint needs query_params=['page']"),
        (header_parameter, {}, "GET /api/x: the endpoint needs header_params=['x_trace']"),
        (background_tasks, {}, "GET /api/x: the endpoint needs background_tasks_param_name="),
        (security_scopes, {}, "dependency token = Depends(bearer_token) needs own_oauth_scopes"),
        (path_parameter, {}, "GET /api/x/{id}: the endpoint needs path_params=['id']"),
        (embedded_body, {}, "POST /api/x: the body must be one pydantic model, not embedded"),
        (sync_endpoint, {}, "GET /api/x: the endpoint must be an `async def`"),
        (returns_a_dict, {}, "GET /api/x: the endpoint must be annotated to return a Response"),
        (shadowed, {}, "GET /api/x: an earlier route (first) answers it"),
    ],
)
def test_a_marked_route_needing_more_stops_the_app(
    declare: Callable[[APIRouter], None], include: dict[str, Any], named: str
) -> None:
    """Building the middleware stack (the app's start-up) fails, naming the route and what
    the fast path would have skipped."""
    app = FastAPI()
    router = APIRouter(prefix="/api")
    declare(router)
    app.include_router(router, **include)
    app.add_middleware(hot.HotRoutes, router=app.router)
    with pytest.raises(RuntimeError, match=re.escape(named)):
        app.build_middleware_stack()


def test_only_the_marked_routes_the_app_serves_are_read() -> None:
    app = FastAPI()
    router = APIRouter(prefix="/api")
    plain(router)

    @router.get("/y")  # not marked: what it needs is FastAPI's business
    async def unmarked(page: int = 1) -> JSON:
        return success("y")

    query_parameter(APIRouter())  # marked, but on a router the app never includes
    app.include_router(router)
    app.add_middleware(hot.HotRoutes, router=app.router)
    app.build_middleware_stack()
    assert list(hot_layer_of(app).routes) == [("GET", "/api/x")]
