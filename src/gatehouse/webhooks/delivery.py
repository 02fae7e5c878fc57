"""The webhooks' delivery loop: posts due deliveries with their Standard Webhooks signature and
writes the outcomes (delivered, retry later, failed), one database transaction per round: the
outcomes of the posts finished since the last round written, and what is due leased for every
free slot (the next delivery of a chain just settled among them).

Every delivery is its own task, and an endpoint has at most `concurrency` in flight in this
process (the store is asked for no more than each endpoint has room for), so a slow or dead
endpoint holds its own slots only. One user's deliveries to an endpoint go one at a time, in
order: the store only hands out a delivery whose predecessor in that chain is settled. A process
killed mid-post leaves that delivery leased; once the lease expires it is posted again, with the
same `webhook-id`. Endpoints are cached; each round says whether a cached one is still current
(its `updated_at`), so a change or a pause is seen at once."""

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
CACHED = 1000  # endpoints (and their secrets) kept; past that the cache starts again


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
    nothing woke the loop (new rows written by this process's dispatcher, and every finished
    delivery, wake it at once)."""

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
        self._endpoints: dict[str, Endpoint] = {}
        self._secrets: dict[str, str] = {}  # ciphertext -> secret
        self._settled: list[tuple[WebhookDelivery, Outcome]] = []  # posted, to be written
        self.outcomes: Counter[str] = Counter()

    def wake(self) -> None:
        self._woken.set()

    def _secret(self, endpoint: Endpoint) -> str:
        secret = self._secrets.get(endpoint.secret_ciphertext)
        if secret is None:
            if len(self._secrets) >= CACHED:
                self._secrets.clear()
            context = secret_context(endpoint.id)
            secret = self._keyring.decrypt(endpoint.secret_ciphertext, context)
            self._secrets[endpoint.secret_ciphertext] = secret
        return secret

    async def _post(self, delivery: WebhookDelivery, endpoint: Endpoint) -> None:
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
        self._settled.append((delivery, outcome))
        self._woken.set()

    async def _run_one(self, delivery: WebhookDelivery, endpoint: Endpoint) -> None:
        try:
            await self._post(delivery, endpoint)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", delivery.id)
            self._done(delivery)  # no outcome: posted again once its lease expires
            self._woken.set()

    def _done(self, delivery: WebhookDelivery) -> None:
        """Its slot is free: its outcome is written (or will never be, by this process)."""
        if self._tasks.pop(delivery.id, None) is None:
            return
        self._per_endpoint[delivery.webhook_id] -= 1
        if self._per_endpoint[delivery.webhook_id] <= 0:
            del self._per_endpoint[delivery.webhook_id]

    async def run_once(self) -> int:
        """One transaction: the outcomes of the posts finished since the last one written, and
        what is due and fits the limits leased (the freed slots included); the leased ones
        start posting. How many started. While the database is away (`Unavailable`), the
        outcomes wait for the next time (their posts are done, only their record is retried)."""
        if not self._settled and len(self._tasks) >= self._total:
            return 0  # nothing to write, no slot to fill
        settled, self._settled = self._settled, []
        for delivery, _ in settled:  # written below, or else kept: their slots count as free
            self._per_endpoint[delivery.webhook_id] -= 1
        free = self._total - len(self._tasks) + len(settled)
        room = {w: self._concurrency - n for w, n in self._per_endpoint.items()}
        known = {w: e.updated_at for w, e in self._endpoints.items()}
        now = self._clock()
        try:
            written, claimed, fresh = await self._store.settle_and_claim(
                self.owner,
                [(delivery.id, outcome) for delivery, outcome in settled],
                now,
                now + self._lease,
                free,
                room,
                self._concurrency,
                known,
            )
        except BaseException:
            for delivery, _ in settled:
                self._per_endpoint[delivery.webhook_id] += 1
            self._settled[:0] = settled
            raise
        for (delivery, _), done in zip(settled, written, strict=True):
            if not done:
                log.warning("webhook delivery %s: lease lost before its record", delivery.id)
            self._per_endpoint[delivery.webhook_id] += 1  # undone by _done
            self._done(delivery)
        if len(self._endpoints) + len(fresh) > CACHED:
            self._endpoints.clear()
        self._endpoints.update((e.id, e) for e in fresh)
        started = 0
        for delivery in claimed:
            if delivery.id in self._tasks:  # posted longer than its lease: still ours
                continue
            endpoint = self._endpoints.get(delivery.webhook_id)
            if endpoint is None:  # removed meanwhile (its deliveries go with it)
                await self._store.release(delivery.id, self.owner)
                continue
            self._per_endpoint[delivery.webhook_id] += 1
            self._tasks[delivery.id] = asyncio.create_task(self._run_one(delivery, endpoint))
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
            if self._settled:  # finished during that transaction: written at once
                await asyncio.sleep(0)
                continue
            waiter = asyncio.ensure_future(self._woken.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=self._poll, return_when="FIRST_COMPLETED")
            waiter.cancel()
            stopper.cancel()
        await self._drain()
        log.info("webhook deliverer stopped: %s", dict(self.outcomes))

    async def _drain(self) -> None:
        """Stopping: posts in flight may finish and their outcomes be written (nothing new is
        leased); the rest keep their lease, and are posted again, with the same webhook-id,
        once it expires."""
        total, self._total = self._total, 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_grace
        try:
            while self._tasks and loop.time() < deadline:
                if self._settled:
                    try:
                        await self.run_once()
                    except Unavailable:
                        await asyncio.sleep(0.2)
                    continue
                self._woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), deadline - loop.time())
        finally:
            self._total = total
            for task in list(self._tasks.values()):
                task.cancel()
