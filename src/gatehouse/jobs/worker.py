"""The worker role: each job of the queues through `handle_job`, its result pushed over Socket.IO.

The same processor runs under BullMQ workers (with Redis) and under the in-process queue of the
embedded `gatehouse serve`. Job data holds passwords, codes and tokens: nothing here logs it.
The full result goes only to the `notify` room; the queue keeps it `at_rest` (no credential).

Each attempt is counted and timed by queue and outcome (`gatehouse_jobs_total`,
`gatehouse_job_duration_seconds`); with a tracer it is a `process <queue>` span, child of the
context a producer put in the job's data (`traceparent`: Gatehouse's job door does), or the
first span of a new trace."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from gatehouse.bootstrap import Services
from gatehouse.errors import GatehouseError, JobFailed
from gatehouse.jobs.dispatch import QUEUES, handle_job, notification_room
from gatehouse.jobs.results import at_rest
from gatehouse.ports import JobRun, Notifier
from gatehouse.ports.telemetry import NO_METRICS, TRACE_KEYS, Attribute, Metrics, Tracer
from gatehouse.selfservice.context import FlowContext

log = logging.getLogger(__name__)
# (context, queue, job name, data, job id)
Handler = Callable[[FlowContext, str, str, Any, str], Awaitable[dict[str, Any]]]
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
GAVE_UP = "The job could not be completed; please try again later"


class JobProcessor:
    """One attempt at one job: run it, push the result to its room, hand the queue what may rest."""

    def __init__(
        self,
        ctx: FlowContext,
        notifier: Notifier,
        handler: Handler = handle_job,
        *,
        metrics: Metrics = NO_METRICS,
        tracer: Tracer | None = None,
    ):
        self._ctx = ctx
        self._notifier = notifier
        self._handler = handler
        self._metrics, self._tracer = metrics, tracer

    async def __call__(self, run: JobRun) -> dict[str, Any]:
        if self._tracer is None:
            return await self._attempt(run)
        data = run.data if isinstance(run.data, dict) else {}
        parent = {k: data[k] for k in TRACE_KEYS if isinstance(data.get(k), str)}
        attributes: dict[str, Attribute] = {
            "messaging.system": "bullmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": run.queue,
            "messaging.message.id": run.id,
            "gatehouse.job.name": run.name,
            "gatehouse.job.attempt": run.attempt,
        }
        with self._tracer.span(
            f"process {run.queue}", kind="consumer", parent=parent, attributes=attributes
        ):
            return await self._attempt(run)

    async def _attempt(self, run: JobRun) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            result = await self._handler(self._ctx, run.queue, run.name, run.data, run.id)
        except Exception as exc:
            # Infrastructure failure: raise so the queue retries with backoff. The client hears
            # of it only when no retry is left.
            reason = exc.message if isinstance(exc, GatehouseError) else type(exc).__name__
            if run.final:
                # Where it failed, not the error's text: that may quote the job's data.
                where = "".join(traceback.format_tb(exc.__traceback__))
                log.error("job %s/%s gave up (%s)\n%s", run.queue, run.id, reason, where)
                failure = {"success": False, "message": GAVE_UP, "code": "job_failed", "data": {}}
                await self._notify(run, failure)
            outcome = "failed" if run.final else "retried"
            self._metrics.job(run.queue, outcome, time.perf_counter() - start)
            # `from None`: BullMQ keeps the traceback in Redis, and the chained error's text
            # could quote the job's data.
            raise JobFailed(reason) from None
        # Ids only: the multi-node test counts these lines per worker.
        log.info("processed job %s/%s (success=%s)", run.queue, run.id, result.get("success"))
        await self._notify(run, result)
        outcome = "completed" if result.get("success") else "refused"
        self._metrics.job(run.queue, outcome, time.perf_counter() - start)
        # What the queue stores (BullMQ's returnvalue, the embedded table) and the job door
        # shows: tokens and codes only ever reach the room the producer named.
        return at_rest(result)

    async def _notify(self, run: JobRun, result: dict[str, Any]) -> None:
        room = notification_room(run.data, result)
        if room is None:
            return
        payload = {**result, "job_id": run.id, "queue": run.queue}
        try:
            await self._notifier.emit(room, "notification", payload)
        except Exception as exc:  # the job is done either way; a lost push must not redo it
            log.warning("job %s/%s: notification not sent (%s)", run.queue, run.id, exc)


def worker_role(
    queues: Sequence[str] = QUEUES, handler: Handler = handle_job
) -> Callable[[Services], Background]:
    """A role for `processes.run_roles` or `serve_http`: consume `queues` until stopped."""

    def role(services: Services) -> Background:
        processor = JobProcessor(
            services.ctx,
            services.ctx.notifier,
            handler,
            metrics=services.metrics,
            tracer=services.tracer,
        )

        async def run(stop: asyncio.Event) -> None:
            concurrency = services.settings.worker_concurrency
            try:
                await services.job_worker.work(queues, processor, stop, concurrency)
            finally:
                log.info("worker stopped")

        return run

    return role
