"""The webhooks' delivery loop: takes due deliveries from the database under a lease, posts each
with its Standard Webhooks signature, writes the outcome (delivered, retry later, failed).

Every delivery is its own task, and an endpoint has at most `concurrency` in flight in this
process (endpoints at their limit are left out of the query), so a slow or dead endpoint holds
its own slots only. One user's deliveries to an endpoint go one at a time, in order: the store
only hands out the oldest pending one of each chain. A process killed mid-post leaves that
delivery leased; once the lease expires it is posted again, with the same `webhook-id`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import Counter
from datetime import datetime, timedelta

from gatehouse.domain import webhooks as rules
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.webhooks import DELIVERED, FAILED, PENDING, Endpoint, WebhookDelivery
from gatehouse.errors import Unavailable
from gatehouse.ports import Clock
from gatehouse.ports.telemetry import NO_METRICS, Metrics
from gatehouse.ports.webhooks import Attempt, Outcome, WebhookClient, WebhookStore
from gatehouse.webhooks.registry import secret_context

log = logging.getLogger(__name__)


def owner_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def outcome_of(
    delivery: WebhookDelivery,
    attempt: Attempt,
    now: datetime,
    *,
    started: datetime,
    window: timedelta,
    base: float,
    cap: float,
) -> Outcome:
    """What an attempt makes of a delivery: delivered on a 2xx; else another try after the
    backoff, unless that falls past the retry window (counted from the first attempt): failed."""
    attempts = delivery.attempts + 1
    expires = delivery.expires_at or started + window
    if attempt.ok:
        return Outcome(DELIVERED, attempts, attempt, now, now, expires)
    later = now + timedelta(seconds=rules.backoff(attempts, base, cap))
    status = FAILED if later > expires else PENDING
    return Outcome(status, attempts, attempt, now, later, expires)


class WebhookDeliverer:
    """Runs until stopped. `lease` must outlast one post (the client's timeout); `total` bounds
    the posts in flight in this process; `poll` is how often the database is asked when
    nothing woke the loop (new rows written by this process's dispatcher wake it at once)."""

    def __init__(
        self,
        store: WebhookStore,
        client: WebhookClient,
        keyring: Keyring,
        clock: Clock,
        *,
        retry_hours: float = 24.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 3600.0,
        lease: float = 60.0,
        concurrency: int = 4,
        total: int = 64,
        poll: float = 0.5,
        stop_grace: float = 10.0,
        owner: str | None = None,
        metrics: Metrics = NO_METRICS,
    ):
        self._store, self._client, self._keyring, self._clock = store, client, keyring, clock
        self._window = timedelta(hours=retry_hours)
        self._base, self._cap = backoff_base, backoff_cap
        self._lease = timedelta(seconds=lease)
        self._concurrency, self._total, self._poll = concurrency, total, poll
        self._stop_grace, self._metrics = stop_grace, metrics
        self.owner = owner or owner_name()
        self._woken = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._secrets: dict[str, str] = {}  # ciphertext -> secret
        self.outcomes: Counter[str] = Counter()

    def wake(self) -> None:
        self._woken.set()

    def _secret(self, endpoint: Endpoint) -> str:
        secret = self._secrets.get(endpoint.secret_ciphertext)
        if secret is None:
            context = secret_context(endpoint.id)
            secret = self._keyring.decrypt(endpoint.secret_ciphertext, context)
            self._secrets[endpoint.secret_ciphertext] = secret
        return secret

    async def _post(self, delivery: WebhookDelivery) -> None:
        endpoint = await self._store.get(delivery.webhook_id)
        if endpoint is None:  # removed meanwhile: its deliveries went with it
            return
        if endpoint.paused:
            await self._store.release(delivery.id, self.owner)
            return
        started = self._clock()
        headers = rules.headers(
            self._secret(endpoint), delivery.id, int(started.timestamp()), delivery.body
        )
        attempt = await self._client.post(endpoint.url, delivery.body.encode(), headers)
        outcome = outcome_of(
            delivery,
            attempt,
            self._clock(),
            started=started,
            window=self._window,
            base=self._base,
            cap=self._cap,
        )
        kind = {DELIVERED: "delivered", FAILED: "failed"}.get(outcome.status, "retried")
        self.outcomes[kind] += 1
        self._metrics.webhook_delivery(kind)
        pause = 0.2
        for _ in range(8):  # the post is done: only its record is tried again
            try:
                if not await self._store.finish(delivery.id, self.owner, outcome):
                    log.warning("webhook delivery %s: lease lost before its record", delivery.id)
                return
            except Unavailable as exc:
                log.warning("webhook store unavailable (%s): again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause *= 2
        log.error("webhook delivery %s: outcome not recorded; it will be posted again", delivery.id)

    async def _run_one(self, delivery: WebhookDelivery) -> None:
        try:
            await self._post(delivery)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery.id)
        finally:
            self._tasks.pop(delivery.id, None)
            self._per_endpoint[delivery.webhook_id] -= 1
            if self._per_endpoint[delivery.webhook_id] <= 0:
                del self._per_endpoint[delivery.webhook_id]
            self._woken.set()

    async def run_once(self) -> int:
        """Start what is due and fits the limits; how many were started."""
        free = self._total - len(self._tasks)
        if free <= 0:
            return 0
        busy = [w for w, n in self._per_endpoint.items() if n >= self._concurrency]
        now = self._clock()
        started = 0
        for delivery in await self._store.due(now, min(free * 2, 500), busy):
            if len(self._tasks) >= self._total or delivery.id in self._tasks:
                continue
            if self._per_endpoint[delivery.webhook_id] >= self._concurrency:
                continue
            if not await self._store.claim(delivery.id, self.owner, now, now + self._lease):
                continue  # another process took it
            self._per_endpoint[delivery.webhook_id] += 1
            self._tasks[delivery.id] = asyncio.create_task(self._run_one(delivery))
            started += 1
        return started

    async def run(self, stop: asyncio.Event) -> None:
        log.info("webhook deliverer %s started", self.owner)
        pause = 0.2
        while not stop.is_set():
            self._woken.clear()
            try:
                await self.run_once()
                pause = 0.2
            except Unavailable as exc:
                log.warning("webhook store unavailable (%s): again in %.1fs", exc, pause)
                pause = min(pause * 2, 10.0)
                await asyncio.sleep(pause)
                continue
            waiter = asyncio.ensure_future(self._woken.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=self._poll, return_when="FIRST_COMPLETED")
            waiter.cancel()
            stopper.cancel()
        # Stopping: posts in flight may finish (and be recorded); the rest keep their lease,
        # and are posted again, with the same webhook-id, once it expires.
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks.values(), return_exceptions=True),
                    self._stop_grace,
                )
        for task in list(self._tasks.values()):
            task.cancel()
        log.info("webhook deliverer stopped: %s", dict(self.outcomes))
