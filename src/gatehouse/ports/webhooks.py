"""The webhooks' ports: the store of endpoints and deliveries (the database is the arbiter of
leases, as for the courier), and the HTTP client that posts one attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatehouse.domain.webhooks import Endpoint, WebhookDelivery


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to, for the delivery log: `status_code` None when there was no
    answer (a timeout, a refused connection, a refused address), then `error` says why."""

    status_code: int | None
    error: str | None
    duration_ms: int
    excerpt: str = ""  # the answer's first bytes, as text (never stored whole)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished attempt as written down: the delivery's new status and when to try again."""

    status: str
    attempts: int
    attempt: Attempt
    now: datetime
    next_attempt_at: datetime
    expires_at: datetime | None


class WebhookStore(Protocol):
    """Endpoints and their deliveries. Every method raises `errors.Unavailable` when the
    database cannot be reached."""

    async def add(self, endpoint: Endpoint) -> None: ...
    async def get(self, webhook_id: str) -> Endpoint | None: ...
    async def page(self, after: str | None, limit: int) -> list[Endpoint]:
        """Endpoints by id, after `after`."""

    async def active(self) -> list[Endpoint]:
        """Every endpoint, paused ones included (they accumulate deliveries)."""

    async def update(self, endpoint: Endpoint) -> bool: ...
    async def delete(self, webhook_id: str) -> bool:
        """The endpoint and its deliveries."""

    async def enqueue(self, deliveries: Sequence[WebhookDelivery]) -> int:
        """Insert the deliveries that are not there yet (one per webhook and event): how many."""

    async def settle_and_claim(
        self,
        owner: str,
        outcomes: Sequence[tuple[str, Outcome]],
        now: datetime,
        until: datetime,
        limit: int,
        room: Mapping[str, int],
        default_room: int,
        known: Mapping[str, datetime],
    ) -> tuple[list[bool], list[WebhookDelivery], list[Endpoint]]:
        """One transaction, the delivery loop's round: each outcome written (its lease freed)
        while `owner` holds its delivery (which ones were), then up to `limit` due deliveries
        leased to `owner` until `until` (at most `room[endpoint]`, else `default_room`, of one
        endpoint; each the oldest pending one of its endpoint and user, of endpoints not
        paused), and with them the endpoints whose `updated_at` differs from `known`."""

    async def release(self, delivery_id: str, owner: str) -> None: ...
    async def deliveries(
        self, webhook_id: str, status: str | None, after: int | None, limit: int
    ) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest first (`after`: a `seq` to continue below)."""

    async def get_delivery(self, webhook_id: str, delivery_id: str) -> WebhookDelivery | None: ...
    async def redeliver(
        self, webhook_id: str, now: datetime, *, delivery_id: str | None, since: datetime | None
    ) -> int:
        """Failed deliveries back to pending, due now, with a new retry window: one
        (`delivery_id`) or every one created since `since`. How many."""


class WebhookClient(Protocol):
    """POSTs one attempt: no redirect followed, the answer read up to a small limit; with
    private targets refused, the host is resolved at each attempt and only public addresses
    are connected to (DNS rebinding)."""

    async def check(self, url: str) -> None:
        """Raises `errors.InvalidInput` when the URL's host resolves to a refused address."""

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt: ...
    async def aclose(self) -> None: ...
