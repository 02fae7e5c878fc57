"""A JSON body sent without `Content-Type: application/json` is refused for its type (415), not
as "not an object"; JSON that is not an object keeps its 400. The hot routes hand such a body to
FastAPI, so they answer alike; OpenAPI documents the 415."""

from __future__ import annotations

import json

import pytest

from .api_client import EMAIL, PASSWORD, Api

OBJECT = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
NOT_JSON_TYPES = [
    {"content-type": "text/plain"},
    {"content-type": "application/x-www-form-urlencoded"},
    {"content-type": "text/plain; charset=utf-8"},
    {},  # no type at all: FastAPI does not guess
]


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/auth/refresh", "/api/jobs/read-user"])
@pytest.mark.parametrize("headers", NOT_JSON_TYPES)
async def test_a_body_not_sent_as_json_is_415(api: Api, path: str, headers: dict[str, str]) -> None:
    reply = await api.client.post(path, content=OBJECT, headers=headers)
    assert reply.status_code == 415, reply.text
    assert reply.json() == {
        "status": "error",
        "message": "Send the body as JSON with Content-Type: application/json",
        "code": "unsupported_media_type",
        "errors": [],
    }


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"null", b"5"])
async def test_json_that_is_not_an_object_is_still_400(api: Api, content: bytes) -> None:
    reply = await api.post_raw("/api/auth/login", content)
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"] == "Request body must be a JSON object"
    assert reply.json()["code"] == "malformed_request"


async def test_a_body_sent_as_json_is_read(api: Api) -> None:
    await api.signed_up()
    for media_type in ("application/json", "application/json; charset=utf-8"):
        reply = await api.client.post(
            "/api/auth/login", content=OBJECT, headers={"content-type": media_type}
        )
        assert reply.status_code == 200, reply.text


async def test_openapi_documents_the_415(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    for path in ("/api/auth/login", "/api/auth/refresh", "/api/auth/register"):
        assert "415" in document["paths"][path]["post"]["responses"], path
