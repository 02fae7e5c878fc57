"""The relay: publishes outbox rows to Kafka (or the in-process bus), in order, at least once.

A row written while a traced request or job ran carries that trace's context in its payload
(`ports.telemetry.TRACE_FIELD`): it is taken out of what is published and sent as the record's
`traceparent` header instead, that of a `publish <topic>` span of the relay's own when the relay
traces too. The relay measures the outbox (`gatehouse_outbox_pending`, `_lag_seconds`) and
counts what it published by topic and type."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import orjson

from gatehouse.ports import Clock, EventPublisher, OutboxRecord, OutboxStore, Published
from gatehouse.ports.telemetry import NO_METRICS, TRACE_FIELD, TRACE_KEYS, Metrics, Span, Tracer

log = logging.getLogger(__name__)
PRUNE_EVERY = 600.0
KEEP_PUBLISHED = timedelta(days=1)
MEASURE_EVERY = 5.0  # seconds between two counts of the unpublished rows


def to_published(record: OutboxRecord) -> Published:
    message = record.message
    payload = message.payload
    headers = {"id": message.id}
    carrier = payload.get(TRACE_FIELD)
    if carrier is not None:  # the writer's trace context: a header, never in the message
        payload = {k: v for k, v in payload.items() if k != TRACE_FIELD}
        if isinstance(carrier, dict):
            headers.update((k, str(v)) for k, v in carrier.items() if k in TRACE_KEYS)
    content_type = (
        "application/cloudevents+json" if "specversion" in payload else "application/json"
    )
    headers["content-type"] = content_type
    return Published(
        topic=message.topic, key=message.key, value=orjson.dumps(payload), headers=headers
    )


def kind_of(payload: dict[str, object]) -> str:
    """The `type` label of a published record: a CloudEvent's type, a command's template."""
    kind = payload.get("type") or payload.get("template") or ""
    return str(kind)[:100]


class Relay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        batch: int,
        interval: float,
        clock: Clock,
        metrics: Metrics = NO_METRICS,
        tracer: Tracer | None = None,
    ):
        self._store, self._publisher, self._clock = store, publisher, clock
        self._batch, self._interval = batch, interval
        self._metrics, self._tracer = metrics, tracer
        self.published = 0
        # The oldest row of the last batch taken, and of the last one that could not be
        # published (until one is): how far behind the relay is.
        self._taken: datetime | None = None
        self._stuck: datetime | None = None

    async def _publish(self, records: Sequence[OutboxRecord]) -> None:
        self._taken = min(r.message.created_at for r in records)
        published = [to_published(r) for r in records]
        spans = self._spans(records, published) if self._tracer is not None else []
        try:
            await self._publisher.publish(published)
        except Exception as exc:
            for span in spans:
                span.fail(type(exc).__name__)
                span.end()
            raise
        for span in spans:
            span.end()
        self._metrics.published(
            Counter((r.message.topic, kind_of(r.message.payload)) for r in records)
        )

    def _spans(self, records: Sequence[OutboxRecord], published: list[Published]) -> list[Span]:
        """A `publish <topic>` span for each traced row, child of the context it was written
        in; the record's `traceparent` header becomes the span's (the courier's parent)."""
        assert self._tracer is not None
        spans = []
        for record, out in zip(records, published, strict=True):
            carrier = record.message.payload.get(TRACE_FIELD)
            if not isinstance(carrier, dict):
                continue
            attributes = {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": out.topic,
                "messaging.message.id": record.message.id,
            }
            span = self._tracer.start(
                f"publish {out.topic}", kind="producer", parent=carrier, attributes=attributes
            )
            out.headers.update(span.carrier())
            spans.append(span)
        return spans

    async def run_once(self) -> int:
        self._taken = None
        count = await self._store.claim(self._batch, self._publish)
        self.published += count
        return count

    def _lag(self, ok: bool) -> None:
        """The outbox lag after a poll: how long the oldest row it published had waited (0 when
        it found none); after a failure, the age of the oldest row it could not publish, which
        grows while the failures last."""
        if ok:
            self._stuck = None
            oldest = self._taken
        else:
            self._stuck = self._stuck or self._taken
            oldest = self._stuck
            if oldest is None:
                return  # failed before reading a row: nothing known
        lag = 0.0 if oldest is None else (self._clock() - oldest).total_seconds()
        self._metrics.outbox(lag_seconds=lag)

    async def _measure(self) -> None:
        try:
            self._metrics.outbox(pending=await self._store.pending_count())
        except Exception as exc:  # the next poll reports the outage; this is only a gauge
            log.debug("relay: outbox not measured: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        await self._publisher.start()
        backoff = self._interval
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + PRUNE_EVERY
        next_measure = loop.time()
        log.info("relay started")
        while not stop.is_set():
            try:
                count = await self.run_once()
                self._lag(ok=True)
                backoff = self._interval
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY
                    await self._prune()
            except Exception as exc:
                # Kafka or the database is down: nothing was marked, so nothing is lost. Back off.
                log.warning("relay: publish failed, retrying in %.1fs: %s", backoff, exc)
                self._lag(ok=False)
                count = 0
                backoff = min(backoff * 2 if backoff >= 0.5 else 0.5, 10.0)
            if loop.time() >= next_measure:
                next_measure = loop.time() + MEASURE_EVERY
                await self._measure()
            if count < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
        await self._publisher.close()
        log.info("relay stopped after publishing %d records", self.published)

    async def _prune(self) -> None:
        pruned = await self._store.prune(self._clock() - KEEP_PUBLISHED)
        if pruned:
            log.info("relay pruned %d published outbox rows", pruned)
