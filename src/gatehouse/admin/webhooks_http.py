"""`/api/admin/webhooks` (DESIGN 12, docs/webhooks.md): endpoints, their delivery log and
redelivery. Included in `admin/http.py`'s router, behind the admin key. The use cases are
`webhooks/registry.py`; the secret is answered once, at creation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gatehouse.bootstrap import Services
from gatehouse.domain.webhooks import Endpoint, WebhookDelivery
from gatehouse.web.deps import services
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import Envelope, Out, error_answers
from gatehouse.webhooks.registry import Registry

router = APIRouter()
Svc = Annotated[Services, Depends(services)]
REFUSED = (401, 404, 422, 503)
NO_WEBHOOK = {404: "Admin API off, or no such webhook"}
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=200)]


def registry(svc: Services) -> Registry:
    s = svc.settings
    store, client = svc.webhooks()  # the client only resolves hosts here
    return Registry(
        store,
        client,
        svc.ctx.keyring,
        svc.ctx.clock,
        https_only=s.env == "production",
        allow_private=s.webhook_allow_private,
    )


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048)
    events: list[str] = Field(min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=50)
    paused: bool | None = None
    description: str | None = Field(default=None, max_length=500)


class RetryFailedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: AwareDatetime


class WebhookOut(Out):
    id: str
    url: str
    events: list[str]
    description: str | None
    paused: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CreatedWebhookOut(WebhookOut):
    secret: str  # `whsec_...`: shown this once


class WebhookData(Out):
    webhook: WebhookOut


class CreatedData(Out):
    webhook: CreatedWebhookOut


class WebhooksData(Out):
    webhooks: list[WebhookOut]
    next_cursor: str | None


class DeliveryOut(Out):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    duration_ms: int | None
    created_at: AwareDatetime
    delivered_at: AwareDatetime | None


class DeliveryData(Out):
    delivery: DeliveryOut


class DeliveriesData(Out):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


class RedeliveredData(Out):
    webhook_id: str
    redelivered: int


def endpoint_out(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "paused": endpoint.paused,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def delivery_out(d: WebhookDelivery) -> dict[str, Any]:
    fields = ("id", "webhook_id", "event_id", "event_type", "status", "attempts")
    more = ("last_status_code", "last_error", "duration_ms", "created_at", "delivered_at")
    return {name: getattr(d, name) for name in (*fields, *more)}


@router.post(
    "/webhooks",
    status_code=201,
    response_model=Envelope[CreatedData],
    responses=error_answers(*REFUSED, 400),
)
async def create_webhook(body: WebhookIn, svc: Svc) -> JSON:
    """Register an endpoint for event types (or "*"); its signing secret is in this answer only."""
    endpoint, secret = await registry(svc).create(body.url, body.events, body.description)
    data = {"webhook": {**endpoint_out(endpoint), "secret": secret}}
    return success("Webhook created", data, status=201)


@router.get(
    "/webhooks", response_model=Envelope[WebhooksData], responses=error_answers(*REFUSED, 400)
)
async def list_webhooks(svc: Svc, cursor: Cursor = None, limit: Limit = 50) -> JSON:
    """Every endpoint, by id, a page at a time (`next_cursor`, null at the end)."""
    page = await registry(svc).list(cursor, limit)
    data = {"webhooks": [endpoint_out(e) for e in page.items], "next_cursor": page.next_cursor}
    return success("Webhooks", data)


@router.get(
    "/webhooks/{webhook_id}",
    response_model=Envelope[WebhookData],
    responses=error_answers(*REFUSED, meaning=NO_WEBHOOK),
)
async def get_webhook(webhook_id: str, svc: Svc) -> JSON:
    """One endpoint (never its secret)."""
    return success("Webhook", {"webhook": endpoint_out(await registry(svc).get(webhook_id))})


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=Envelope[WebhookData],
    responses=error_answers(*REFUSED, 400, meaning=NO_WEBHOOK),
)
async def update_webhook(webhook_id: str, body: WebhookPatch, svc: Svc) -> JSON:
    """Change the URL, the event types, the description; pause (deliveries accumulate) or
    resume (they go out in order)."""
    endpoint = await registry(svc).update(
        webhook_id,
        url=body.url,
        events=body.events,
        paused=body.paused,
        description=body.description,
    )
    return success("Webhook updated", {"webhook": endpoint_out(endpoint)})


@router.delete(
    "/webhooks/{webhook_id}",
    response_model=Envelope[WebhookData],
    responses=error_answers(*REFUSED, meaning=NO_WEBHOOK),
)
async def delete_webhook(webhook_id: str, svc: Svc) -> JSON:
    """Remove the endpoint and its deliveries."""
    endpoint = await registry(svc).get(webhook_id)
    await registry(svc).delete(webhook_id)
    return success("Webhook deleted", {"webhook": endpoint_out(endpoint)})


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Envelope[DeliveriesData],
    responses=error_answers(*REFUSED, 400, meaning=NO_WEBHOOK),
)
async def list_deliveries(
    webhook_id: str,
    svc: Svc,
    status: Literal["pending", "delivered", "failed"] | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSON:
    """The endpoint's delivery log, newest first: attempts, last answer code, duration."""
    page = await registry(svc).deliveries(webhook_id, status, cursor, limit)
    found = [delivery_out(d) for d in page.items]
    return success("Deliveries", {"deliveries": found, "next_cursor": page.next_cursor})


@router.post(
    "/webhooks/{webhook_id}/deliveries/retry-failed",
    response_model=Envelope[RedeliveredData],
    responses=error_answers(*REFUSED, meaning=NO_WEBHOOK),
)
async def retry_failed(webhook_id: str, body: RetryFailedIn, svc: Svc) -> JSON:
    """Every failed delivery created since `since` goes out again (in order, a new window)."""
    since: datetime = body.since
    count = await registry(svc).retry_failed(webhook_id, since)
    return success(
        "Failed deliveries queued again", {"webhook_id": webhook_id, "redelivered": count}
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    response_model=Envelope[DeliveryData],
    responses=error_answers(
        *REFUSED, meaning={404: "No such webhook or delivery", 409: "The delivery is not failed"}
    ),
)
async def retry_delivery(webhook_id: str, delivery_id: str, svc: Svc) -> JSON:
    """One failed delivery goes out again, with the same `webhook-id`."""
    delivery = await registry(svc).retry(webhook_id, delivery_id)
    return success("Delivery queued again", {"delivery": delivery_out(delivery)})
