"""The operators' use cases on webhooks: register (the secret shown once), list, change, pause,
remove an endpoint; read its delivery log; redeliver one failed delivery or all since a time."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, TypeVar

from gatehouse.domain import webhooks as rules
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.webhooks import Endpoint, WebhookDelivery
from gatehouse.errors import Conflict, InvalidInput, NotFound
from gatehouse.ports import Clock
from gatehouse.ports.webhooks import WebhookClient, WebhookStore


def secret_context(webhook_id: str) -> str:
    """What an endpoint's secret ciphertext is bound to (the keyring's context)."""
    return f"webhook-secret:{webhook_id}"


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": value}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = json.loads(raw)["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidInput("cursor: not a cursor this API gave") from None
    if not isinstance(after, str | int):
        raise InvalidInput("cursor: not a cursor this API gave")
    return after


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Registry:
    """`https_only` in production; `allow_private` lets endpoints on private and loopback
    addresses through (development, tests); else the host is resolved here and refused when
    any of its addresses is not public (and again at each delivery, by the client)."""

    store: WebhookStore
    client: WebhookClient
    keyring: Keyring
    clock: Clock
    https_only: bool = False
    allow_private: bool = False

    async def _check(self, url: str) -> None:
        rules.check_url(url, https_only=self.https_only)
        if not self.allow_private:
            await self.client.check(url)

    async def create(
        self, url: str, events: Sequence[str], description: str | None = None
    ) -> tuple[Endpoint, str]:
        """The new endpoint and its secret, which is shown this once."""
        await self._check(url)
        kinds = rules.event_types(events)
        if description is not None and len(description) > rules.MAX_DESCRIPTION:
            raise InvalidInput(f"description: at most {rules.MAX_DESCRIPTION} characters")
        webhook_id, secret, now = str(uuid.uuid4()), rules.new_secret(), self.clock()
        ciphertext = self.keyring.encrypt(secret, secret_context(webhook_id))
        endpoint = Endpoint(webhook_id, url, kinds, description, False, ciphertext, now, now)
        await self.store.add(endpoint)
        return endpoint, secret

    async def get(self, webhook_id: str) -> Endpoint:
        endpoint = await self.store.get(webhook_id) if len(webhook_id) <= 36 else None
        if endpoint is None:
            raise NotFound("No such webhook")
        return endpoint

    async def list(self, cursor: str | None, limit: int) -> Page[Endpoint]:
        after = decode_cursor(cursor)
        found = await self.store.page(str(after) if after is not None else None, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Page(found, encode_cursor(found[-1].id) if more else None)

    async def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        paused: bool | None = None,
        description: str | None = None,
    ) -> Endpoint:
        endpoint = await self.get(webhook_id)
        if url is not None:
            await self._check(url)
            endpoint = replace(endpoint, url=url)
        if events is not None:
            endpoint = replace(endpoint, events=rules.event_types(events))
        if paused is not None:
            endpoint = replace(endpoint, paused=paused)
        if description is not None:
            if len(description) > rules.MAX_DESCRIPTION:
                raise InvalidInput(f"description: at most {rules.MAX_DESCRIPTION} characters")
            endpoint = replace(endpoint, description=description or None)
        endpoint = replace(endpoint, updated_at=self.clock())
        if not await self.store.update(endpoint):
            raise NotFound("No such webhook")
        return endpoint

    async def delete(self, webhook_id: str) -> None:
        if len(webhook_id) > 36 or not await self.store.delete(webhook_id):
            raise NotFound("No such webhook")

    async def deliveries(
        self, webhook_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[WebhookDelivery]:
        await self.get(webhook_id)
        if status is not None and status not in rules.STATUSES:
            raise InvalidInput(f"status: one of {', '.join(rules.STATUSES)}")
        after = decode_cursor(cursor)
        if after is not None and not isinstance(after, int):
            raise InvalidInput("cursor: not a cursor this API gave")
        found = await self.store.deliveries(webhook_id, status, after, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Page(found, encode_cursor(found[-1].seq) if more else None)

    async def retry(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        """One failed delivery back to pending (with a new retry window); 409 if not failed."""
        await self.get(webhook_id)
        found = await self.store.get_delivery(webhook_id, delivery_id)
        if found is None:
            raise NotFound("No such delivery")
        now = self.clock()
        if not await self.store.redeliver(webhook_id, now, delivery_id=delivery_id, since=None):
            raise Conflict(f"The delivery is {found.status}, not failed")
        again = await self.store.get_delivery(webhook_id, delivery_id)
        assert again is not None
        return again

    async def retry_failed(self, webhook_id: str, since: datetime) -> int:
        """Every delivery failed and created since `since`, back to pending."""
        await self.get(webhook_id)
        return await self.store.redeliver(webhook_id, self.clock(), delivery_id=None, since=since)
