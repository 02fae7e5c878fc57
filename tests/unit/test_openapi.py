"""OpenAPI documents every answer: each route's success and error schemas, those schemas checked
against what the routes really answer, and the admin routes listed only when the API is on."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from gatehouse.admin.http import FailedJobsData, RetriedData
from gatehouse.bootstrap import build
from gatehouse.entrypoints.app import create_app
from gatehouse.jobs.http import JobAcceptedData, JobStateData
from gatehouse.observability.health import (
    Jwks,
    LiveData,
    ReadyData,
    SchemaData,
    SchemaNotReadyOut,
)
from gatehouse.selfservice.login.schemas import LoginData, MfaRequiredData
from gatehouse.selfservice.profile.schemas import UserData
from gatehouse.selfservice.recovery.schemas import ForgotData
from gatehouse.selfservice.registration.schemas import RegisterData, VerifiedData
from gatehouse.selfservice.sessions.schemas import ReauthData, SessionsData
from gatehouse.web.schemas import Envelope, ErrorOut, NoData

from .api_client import EMAIL, PASSWORD, Api
from .helpers import offline_settings

KEY = "k" * 40
NEW_PASSWORD = "a brand new passphrase"
ADMIN_PATHS = {
    "/api/admin/jobs/{queue}/failed",
    "/api/admin/jobs/{queue}/retry-all",
    "/api/admin/jobs/{queue}/{job_id}/retry",
    "/api/admin/users",
    "/api/admin/users/{user_id}",
    "/api/admin/users/{user_id}/disable",
    "/api/admin/users/{user_id}/enable",
    "/api/admin/users/{user_id}/sessions/revoke",
    "/api/admin/audit",
    "/api/admin/webhooks",
    "/api/admin/webhooks/{webhook_id}",
    "/api/admin/webhooks/{webhook_id}/deliveries",
    "/api/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    "/api/admin/webhooks/{webhook_id}/deliveries/retry-failed",
}
ENVELOPE_ERROR_FIELDS = {"status", "message", "code", "errors"}

Doc = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


@contextlib.asynccontextmanager
async def served(tmp: Path, admin_token: str = "") -> AsyncIterator[httpx.AsyncClient]:
    """The app on a fresh, unmigrated SQLite file (enough for the document and the admin door)."""
    services = build(offline_settings(tmp, admin_token=admin_token))
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await services.aclose()


async def document(client: httpx.AsyncClient) -> Doc:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    doc: Doc = response.json()
    return doc


async def document_of(tmp: Path, admin_token: str = "") -> Doc:
    async with served(tmp, admin_token) as client:
        return await document(client)


def operations(doc: Doc) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def json_schema(answer: dict[str, Any]) -> dict[str, Any] | None:
    schema: dict[str, Any] | None = (
        answer.get("content", {}).get("application/json", {}).get("schema")
    )
    return schema


def component(doc: Doc, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The component a `$ref` names, or None when the schema is not a reference."""
    ref = schema.get("$ref")
    if ref is None:
        return None
    found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def operation_of(doc: Doc, request: httpx.Request) -> dict[str, Any]:
    """The documented operation a request went to (path templates matched as the router does)."""
    for method, path, operation in operations(doc):
        pattern = re.sub(r"\{[^/]+\}", "[^/]+", path)
        if method == request.method and re.fullmatch(pattern, request.url.path):
            return operation
    raise AssertionError(f"{request.method} {request.url.path} is not documented")


# A sign-in answers tokens, or for an account with a second factor the step that finishes it.
LOGIN = Envelope[LoginData | MfaRequiredData]


def answered(doc: Doc, response: httpx.Response, model: type[M]) -> M:
    """The body as `model`, once the document says `model` is this route's answer for this
    status; extra fields fail (the models forbid them), so does any field of the wrong type."""
    operation = operation_of(doc, response.request)
    answer = operation["responses"].get(str(response.status_code))
    assert answer is not None, f"{response.status_code} undocumented: {response.text}"
    schema = json_schema(answer)
    assert schema is not None
    named = component(doc, schema)
    assert named is not None and named["title"] == model.__name__, (named, model)
    return model.model_validate_json(response.content, strict=True)


async def test_every_route_documents_its_success_answer_with_a_schema(tmp_path: Path) -> None:
    doc = await document_of(tmp_path, KEY)
    problems = []
    for method, path, operation in operations(doc):
        successes = {s: a for s, a in operation["responses"].items() if s.startswith("2")}
        if not successes:
            problems.append(f"{method} {path}: no 2xx")
        for status, answer in successes.items():
            schema = json_schema(answer)
            if schema is None:
                problems.append(f"{method} {path} {status}: no application/json schema")
                continue
            named = component(doc, schema)
            if not (named or schema).get("properties"):
                problems.append(f"{method} {path} {status}: a schema without properties")
    assert problems == []


async def test_every_route_documents_its_errors_in_the_error_envelope(tmp_path: Path) -> None:
    doc = await document_of(tmp_path, KEY)
    # FastAPI's own 422 body, which Gatehouse never sends, is nowhere.
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    problems = []
    for method, path, operation in operations(doc):
        errors = {s: a for s, a in operation["responses"].items() if int(s) >= 400}
        if not errors:
            problems.append(f"{method} {path}: no error answer")
        for status, answer in errors.items():
            schema = json_schema(answer)
            named = component(doc, schema) if schema is not None else None
            if named is None:
                problems.append(f"{method} {path} {status}: not a reference to a component")
            elif not set(named["required"]) >= ENVELOPE_ERROR_FIELDS or (
                named["properties"]["status"].get("const") != "error"
            ):
                problems.append(f"{method} {path} {status}: {named['title']} is no error envelope")
    assert problems == []


async def test_each_route_lists_the_errors_it_can_give(tmp_path: Path) -> None:
    doc = await document_of(tmp_path, KEY)

    def errors(method: str, path: str) -> set[int]:
        return {int(s) for s in doc["paths"][path][method]["responses"] if int(s) >= 400}

    assert errors("post", "/api/auth/login") == {400, 401, 413, 415, 422, 429, 500, 503}
    assert errors("post", "/api/auth/register") == {400, 413, 415, 422, 429, 500, 503}
    assert errors("post", "/api/auth/verify-otp") == {400, 409, 413, 415, 422, 429, 500, 503}
    assert errors("get", "/api/auth/profile") == {401, 500, 503}
    assert errors("post", "/api/auth/logout") == {400, 413, 415, 422, 500, 503}
    assert errors("get", "/api/auth/sessions") == {401, 500, 503}
    assert errors("delete", "/api/auth/sessions/{session_id}") == {401, 404, 422, 500, 503}
    assert errors("post", "/api/auth/reauth") == {400, 401, 413, 415, 422, 429, 500, 503}
    assert errors("patch", "/api/auth/profile") == {400, 401, 403, 413, 415, 422, 429, 500, 503}
    assert errors("get", "/health/live") == {500}
    assert errors("get", "/health/schema") == {500, 503}
    assert errors("post", "/api/admin/jobs/{queue}/{job_id}/retry") == {
        401,
        404,
        409,
        422,
        500,
        503,
    }


async def test_admin_routes_are_listed_only_when_the_admin_api_is_on(tmp_path: Path) -> None:
    off = await document_of(tmp_path / "off")
    on = await document_of(tmp_path / "on", KEY)
    assert not [p for p in off["paths"] if p.startswith("/api/admin")]
    assert {p for p in on["paths"] if p.startswith("/api/admin")} == ADMIN_PATHS
    assert set(on["paths"]) - set(off["paths"]) == ADMIN_PATHS


async def test_the_flows_answer_what_the_document_says(api: Api) -> None:
    doc = await document(api.client)
    post, client = api.post, api.client
    body = {"name": "Ada", "email": EMAIL, "password": PASSWORD}
    sent = answered(doc, await post("/api/auth/register", body), Envelope[RegisterData])
    assert sent.data.email == EMAIL
    answered(doc, await post("/api/auth/resend-otp", {"email": EMAIL}), Envelope[RegisterData])
    [code] = (await api.sent_codes(EMAIL))[-1:]
    verified = await post("/api/auth/verify-otp", {"email": EMAIL, "otp": code})
    done = answered(doc, verified, Envelope[VerifiedData]).data
    assert (done.user.email, done.password_required) == (EMAIL, False)

    login = {"email": EMAIL, "password": PASSWORD}
    session = answered(doc, await post("/api/auth/login", login), LOGIN).data
    assert isinstance(session, LoginData)
    bearer = {"Authorization": f"Bearer {session.token}"}
    answered(doc, await client.get("/api/auth/profile", headers=bearer), Envelope[UserData])
    changed = await client.patch("/api/auth/profile", json={"name": "Ada L."}, headers=bearer)
    assert answered(doc, changed, Envelope[UserData]).data.user.name == "Ada L."
    refreshed = await post("/api/auth/refresh", {"refresh_token": session.refresh_token})
    answered(doc, refreshed, Envelope[LoginData])

    answered(doc, await post("/api/auth/password/forgot", {"email": EMAIL}), Envelope[ForgotData])
    [code] = (await api.sent_codes(EMAIL))[-1:]
    reset = {"email": EMAIL, "otp": code, "new_password": NEW_PASSWORD}
    answered(doc, await post("/api/auth/password/reset", reset), Envelope[NoData])
    login = {"email": EMAIL, "password": NEW_PASSWORD}
    session = answered(doc, await post("/api/auth/login", login), LOGIN).data
    assert isinstance(session, LoginData)
    bearer = {"Authorization": f"Bearer {session.token}"}
    gone = await client.request(
        "DELETE", "/api/auth/profile", json={"password": NEW_PASSWORD}, headers=bearer
    )
    answered(doc, gone, Envelope[NoData])
    out = await post("/api/auth/logout", {"refresh_token": session.refresh_token})
    answered(doc, out, Envelope[NoData])

    # Refusals, from the flows, from the request's schema and from the JSON parser.
    answered(doc, await post("/api/auth/login", login), ErrorOut)
    answered(doc, await post("/api/auth/register", {"email": "nope"}), ErrorOut)
    answered(doc, await api.post_raw("/api/auth/login", b"{"), ErrorOut)
    answered(doc, await client.get("/api/auth/profile", headers=bearer), ErrorOut)


async def test_the_session_routes_answer_what_the_document_says(api: Api) -> None:
    doc = await document(api.client)
    await api.signed_up()
    bearer = {"Authorization": f"Bearer {(await api.logged_in())['token']}"}
    api.clock.advance(1)  # newest first: the other session is listed first
    other = (await api.logged_in())["token"]
    listed = await api.client.get("/api/auth/sessions", headers=bearer)
    sessions = answered(doc, listed, Envelope[SessionsData]).data.sessions
    assert [s.current for s in sessions] == [False, True]
    api.clock.advance(api.services.settings.step_up_seconds + 1)
    stale = await api.client.patch(
        "/api/auth/profile", json={"phone": "+14155550123"}, headers=bearer
    )
    assert answered(doc, stale, ErrorOut).code == "reauth_required"
    proved = await api.client.post("/api/auth/reauth", json={"password": PASSWORD}, headers=bearer)
    answered(doc, proved, Envelope[ReauthData])
    path = f"/api/auth/sessions/{sessions[0].id}"
    answered(doc, await api.client.delete(path, headers=bearer), Envelope[NoData])
    answered(doc, await api.client.delete(path, headers=bearer), ErrorOut)
    answered(
        doc,
        await api.client.get("/api/auth/sessions", headers={"Authorization": f"Bearer {other}"}),
        ErrorOut,
    )


async def test_health_jwks_and_jobs_answer_what_the_document_says(api: Api) -> None:
    doc = await document(api.client)
    client = api.client
    assert answered(doc, await client.get("/health/live"), Envelope[LiveData]).status == "success"
    answered(doc, await client.get("/health/ready"), Envelope[ReadyData])
    answered(doc, await client.get("/health/schema"), Envelope[SchemaData])
    assert answered(doc, await client.get("/.well-known/jwks.json"), Jwks).keys

    submitted = await api.post("/api/jobs/read-user", {"data": {"token": "t"}})
    accepted = answered(doc, submitted, Envelope[JobAcceptedData]).data
    state = await client.get(submitted.headers["Location"])
    assert answered(doc, state, Envelope[JobStateData]).data.job_id == accepted.job_id
    answered(doc, await client.get("/api/jobs/no-such-queue/x"), ErrorOut)


async def test_admin_and_the_unready_schema_answer_what_the_document_says(tmp_path: Path) -> None:
    async with served(tmp_path, KEY) as client:
        doc = await document(client)
        # Not migrated: the schema check's 503 carries its report.
        unready = answered(doc, await client.get("/health/schema"), SchemaNotReadyOut)
        assert unready.data is not None and unready.data.missing_tables
        admin = {"Authorization": f"Bearer {KEY}"}
        failed = await client.get("/api/admin/jobs/read-user/failed", headers=admin)
        assert answered(doc, failed, Envelope[FailedJobsData]).data.jobs == []
        moved = await client.post("/api/admin/jobs/read-user/retry-all", headers=admin)
        answered(doc, moved, Envelope[RetriedData])
        missing = await client.post("/api/admin/jobs/read-user/some-job-id/retry", headers=admin)
        answered(doc, missing, ErrorOut)
        answered(doc, await client.get("/api/admin/jobs/read-user/failed"), ErrorOut)
