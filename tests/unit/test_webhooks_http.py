"""`/api/admin/webhooks` in-process on SQLite, through the ASGI app: off (404, and absent from
OpenAPI) without an admin key, 401 without the right one; endpoints created (private and
loopback targets refused unless allowed), listed a page at a time, paused and resumed, removed;
bad input answered with the error envelope and its status; the delivery log, one failed delivery
redelivered, every failed one since a time. Every answer is checked against its OpenAPI model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gatehouse.admin.webhooks_http import (
    CreatedData,
    DeliveriesData,
    DeliveryData,
    RedeliveredData,
    WebhookData,
    WebhooksData,
)
from gatehouse.domain.webhooks import DELIVERED, FAILED, PENDING, WebhookDelivery
from gatehouse.ports.webhooks import Attempt, Outcome
from gatehouse.web.schemas import Envelope

from .api_client import Api, open_api

KEY = "k" * 40
ADMIN = {"Authorization": f"Bearer {KEY}"}
PUBLIC = "http://93.184.216.34/hooks"  # an address literal: no DNS needed, and public
BASE = "/api/admin/webhooks"


@pytest.fixture
async def admin_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("GATEHOUSE_ADMIN_TOKEN", KEY)
    async with open_api(tmp_path, monkeypatch) as opened:
        yield opened


@pytest.fixture
async def private_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("GATEHOUSE_ADMIN_TOKEN", KEY)
    monkeypatch.setenv("GATEHOUSE_WEBHOOK_ALLOW_PRIVATE", "true")
    async with open_api(tmp_path, monkeypatch) as opened:
        yield opened


async def call(
    api: Api, method: str, path: str, model: type[BaseModel] | None, status: int = 200, **kw: Any
) -> dict[str, Any]:
    """The answer's body once its status is `status` and its body what OpenAPI says: the
    route's model (they forbid extras), or else the error envelope."""
    reply = await api.client.request(method, path, headers=kw.pop("headers", ADMIN), **kw)
    assert reply.status_code == status, reply.text
    body: dict[str, Any] = reply.json()
    if model is not None:
        Envelope[model].model_validate(body)  # type: ignore[valid-type]
    else:
        assert body["status"] == "error" and set(body) == {"status", "message", "code", "errors"}
    return body


async def created(api: Api, url: str = PUBLIC, events: list[str] | None = None) -> dict[str, Any]:
    body = await call(
        api, "POST", BASE, CreatedData, 201, json={"url": url, "events": events or ["*"]}
    )
    hook: dict[str, Any] = body["data"]["webhook"]
    return hook


ROUTES = [
    ("GET", BASE),
    ("POST", BASE),
    ("GET", f"{BASE}/x"),
    ("PATCH", f"{BASE}/x"),
    ("DELETE", f"{BASE}/x"),
    ("GET", f"{BASE}/x/deliveries"),
    ("POST", f"{BASE}/x/deliveries/retry-failed"),
    ("POST", f"{BASE}/x/deliveries/y/retry"),
]


async def test_off_without_a_key_and_not_in_openapi(api: Api, admin_api: Api) -> None:
    for method, path in ROUTES:
        off = await api.client.request(method, path, headers=ADMIN, json={})
        assert off.status_code == 404, (method, path)
        assert off.json()["code"] == "not_found"
    shown = (await api.client.get("/openapi.json")).json()["paths"]
    assert not [p for p in shown if p.startswith(BASE)]
    listed = (await admin_api.client.get("/openapi.json")).json()["paths"]
    assert {p for p in listed if p.startswith(BASE)} == {
        BASE,
        f"{BASE}/{{webhook_id}}",
        f"{BASE}/{{webhook_id}}/deliveries",
        f"{BASE}/{{webhook_id}}/deliveries/retry-failed",
        f"{BASE}/{{webhook_id}}/deliveries/{{delivery_id}}/retry",
    }


async def test_a_missing_or_wrong_key_is_401(admin_api: Api) -> None:
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": KEY}):
            body = await call(admin_api, method, path, None, 401, headers=headers, json={})
            assert body["code"] == "invalid_token", (method, path, headers)
    assert await call(admin_api, "GET", BASE, WebhooksData) is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://10.1.2.3/", "http://169.254.169.254/latest", "http://[::1]/"],
)
async def test_private_and_loopback_targets_are_refused_unless_allowed(
    admin_api: Api, private_api: Api, url: str
) -> None:
    body = await call(admin_api, "POST", BASE, None, 422, json={"url": url, "events": ["*"]})
    assert body["code"] == "invalid_input" and "private" in body["message"]
    listed = await call(admin_api, "GET", BASE, WebhooksData)
    assert listed["data"]["webhooks"] == []
    allowed = await created(private_api, url)
    assert allowed["url"] == url and allowed["secret"].startswith("whsec_")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"events": ["*"]}, 422, "url"),
        ({"url": PUBLIC}, 422, "events"),
        ({"url": PUBLIC, "events": []}, 422, "events"),
        ({"url": PUBLIC, "events": ["*"], "secret": "mine"}, 422, "secret"),
        ({"url": PUBLIC, "events": ["*"], "description": "d" * 501}, 422, "description"),
        ({"url": "x" * 2049, "events": ["*"]}, 422, "url"),
        ({"url": PUBLIC, "events": ["a b"]}, 422, None),
        ({"url": "ftp://93.184.216.34/", "events": ["*"]}, 422, None),
        ({"url": "http://user:pw@93.184.216.34/", "events": ["*"]}, 422, None),
        ([], 400, None),
    ],
)
async def test_bad_input_is_answered_with_the_error_envelope(
    admin_api: Api, body: Any, status: int, field: str | None
) -> None:
    answer = await call(admin_api, "POST", BASE, None, status, json=body)
    if field is not None:
        assert answer["code"] == "invalid_input"
        assert [e["field"] for e in answer["errors"]] == [field]
    elif status == 422:
        assert answer["code"] == "invalid_input" and answer["message"].split(":")[0] in (
            "events",
            "url",
        )
    raw = await admin_api.client.post(
        BASE, content=b"{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["code"] == "malformed_request"


async def test_create_list_pause_resume_and_remove(admin_api: Api) -> None:
    api = admin_api
    first = await created(api, PUBLIC + "/1", ["gatehouse.user.*", "gatehouse.user.*"])
    assert first["events"] == ["gatehouse.user.*"] and first["paused"] is False
    made = sorted([first["id"], *[(await created(api, f"{PUBLIC}/{n}"))["id"] for n in (2, 3)]])
    one = await call(api, "GET", f"{BASE}/{first['id']}", WebhookData)
    assert "secret" not in one["data"]["webhook"] and one["data"]["webhook"]["url"] == first["url"]

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await call(api, "GET", BASE, WebhooksData, params=params))["data"]
        seen += [w["id"] for w in page["webhooks"]]
        assert all("secret" not in w for w in page["webhooks"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == made
    assert (await call(api, "GET", BASE, None, 422, params={"cursor": "!!"}))["code"] == (
        "invalid_input"
    )
    assert (await call(api, "GET", BASE, None, 422, params={"limit": 0}))["errors"][0][
        "field"
    ] == "limit"

    path = f"{BASE}/{first['id']}"
    paused = await call(api, "PATCH", path, WebhookData, json={"paused": True})
    assert paused["data"]["webhook"]["paused"] is True
    assert (await call(api, "GET", path, WebhookData))["data"]["webhook"]["paused"] is True
    resumed = await call(api, "PATCH", path, WebhookData, json={"paused": False, "events": ["*"]})
    assert resumed["data"]["webhook"]["paused"] is False
    assert resumed["data"]["webhook"]["events"] == ["*"]
    refused = await call(api, "PATCH", path, None, 422, json={"url": "http://127.0.0.1/"})
    assert "private" in refused["message"]
    await call(api, "PATCH", f"{BASE}/{'0' * 36}", None, 404, json={"paused": True})
    await call(api, "PATCH", path, None, 422, json={"paused": "maybe"})

    removed = await call(api, "DELETE", path, WebhookData)
    assert removed["data"]["webhook"]["id"] == first["id"]
    assert (await call(api, "GET", path, None, 404))["code"] == "not_found"
    await call(api, "DELETE", path, None, 404)
    await call(api, "GET", f"{BASE}/{'x' * 300}", None, 404)


async def logged(api: Api, webhook_id: str, n: int) -> list[WebhookDelivery]:
    """`n` deliveries to the endpoint, a minute apart, one user each, failed for good after
    two attempts (the evens) or delivered (the odds), as the delivery loop writes them."""
    store, _ = api.services.webhooks()
    start = api.clock() - timedelta(minutes=n)
    rows = [
        WebhookDelivery(
            0,
            f"delivery-{i}",
            webhook_id,
            f"event-{i}",
            "gatehouse.user.logged_in",
            f"user-{i}",
            "{}",
            PENDING,
            0,
            None,
            None,
            None,
            start + timedelta(minutes=i),
            start + timedelta(minutes=i),
            None,
            start + timedelta(minutes=i),
        )
        for i in range(n)
    ]
    await store.enqueue(rows)
    now = api.clock()
    claimed, _ = await store.claim_due("t", now, now + timedelta(minutes=1), n, {}, n, {})
    assert len(claimed) == n
    outcomes = [
        (
            x.id,
            Outcome(DELIVERED, 1, Attempt(200, None, 5), now, now, now)
            if i % 2
            else Outcome(FAILED, 2, Attempt(503, "HTTP 503: busy", 9), now, now, now),
        )
        for i, x in enumerate(sorted(claimed, key=lambda x: x.seq))
    ]
    assert await store.finish_many("t", outcomes) == [True] * n
    return rows


async def test_the_delivery_log_and_redelivery(admin_api: Api) -> None:
    api = admin_api
    hook = await created(api)
    path = f"{BASE}/{hook['id']}/deliveries"
    await logged(api, hook["id"], 5)

    log = (await call(api, "GET", path, DeliveriesData))["data"]
    assert [d["id"] for d in log["deliveries"]] == [f"delivery-{i}" for i in (4, 3, 2, 1, 0)]
    assert log["next_cursor"] is None
    failed = log["deliveries"][0]
    assert failed["status"] == FAILED and failed["attempts"] == 2
    assert failed["last_status_code"] == 503 and failed["last_error"] == "HTTP 503: busy"
    assert failed["duration_ms"] == 9 and failed["delivered_at"] is None
    ok = log["deliveries"][1]
    assert ok["status"] == DELIVERED and ok["delivered_at"] is not None and ok["last_error"] is None
    only_failed = (await call(api, "GET", path, DeliveriesData, params={"status": "failed"}))[
        "data"
    ]["deliveries"]
    assert [d["id"] for d in only_failed] == ["delivery-4", "delivery-2", "delivery-0"]
    page = (await call(api, "GET", path, DeliveriesData, params={"limit": 2}))["data"]
    rest = await call(api, "GET", path, DeliveriesData, params={"cursor": page["next_cursor"]})
    assert [d["id"] for d in page["deliveries"] + rest["data"]["deliveries"]] == [
        d["id"] for d in log["deliveries"]
    ]
    await call(api, "GET", path, None, 422, params={"status": "lost"})
    await call(api, "GET", path, None, 422, params={"cursor": "bm90IG91cnM"})
    await call(api, "GET", f"{BASE}/{'0' * 36}/deliveries", None, 404)

    # One failed delivery again: pending, same id; again is a conflict; unknown ones 404.
    again = await call(api, "POST", f"{path}/delivery-2/retry", DeliveryData)
    assert again["data"]["delivery"]["id"] == "delivery-2"
    assert again["data"]["delivery"]["status"] == PENDING
    assert again["data"]["delivery"]["attempts"] == 2
    conflict = await call(api, "POST", f"{path}/delivery-2/retry", None, 409)
    assert conflict["code"] == "conflict" and "pending" in conflict["message"]
    assert (await call(api, "POST", f"{path}/delivery-1/retry", None, 409))["message"] == (
        "The delivery is delivered, not failed"
    )
    await call(api, "POST", f"{path}/nope/retry", None, 404)

    # Every failed one created since a time: delivery-4 (the newest), not delivery-0.
    since = (api.clock() - timedelta(minutes=2)).isoformat()
    body = await call(api, "POST", f"{path}/retry-failed", RedeliveredData, json={"since": since})
    assert body["data"] == {"webhook_id": hook["id"], "redelivered": 1}
    statuses = {
        d["id"]: d["status"]
        for d in (await call(api, "GET", path, DeliveriesData))["data"]["deliveries"]
    }
    assert statuses == {
        "delivery-0": FAILED,
        "delivery-1": DELIVERED,
        "delivery-2": PENDING,
        "delivery-3": DELIVERED,
        "delivery-4": PENDING,
    }
    naive = await call(
        api, "POST", f"{path}/retry-failed", None, 422, json={"since": "2026-01-01T00:00:00"}
    )
    assert naive["errors"][0]["field"] == "since"
    await call(api, "POST", f"{path}/retry-failed", None, 400)  # no body at all
    everything = "2000-01-01T00:00:00Z"
    body = await call(
        api, "POST", f"{path}/retry-failed", RedeliveredData, json={"since": everything}
    )
    assert body["data"]["redelivered"] == 1  # delivery-0, the last one failed
