"""Where the courier sets aside a command it cannot process: the dead-letter topic, as it came."""

from __future__ import annotations

import asyncio
import logging

from gatehouse.errors import Unavailable, Undeliverable
from gatehouse.ports import Clock, Delivery, EventPublisher, Published

log = logging.getLogger(__name__)


class DeadLetters:
    """Publishes a command as it came (its code still sealed) to `topic`, with where it was read
    and why it failed in the headers; without a publisher the command is logged and dropped."""

    def __init__(
        self,
        publisher: EventPublisher | None,
        topic: str,
        *,
        clock: Clock,
        first_pause: float,
        max_pause: float,
    ):
        self._publisher, self._topic, self._clock = publisher, topic, clock
        self._first_pause, self._max_pause = max(first_pause, 0.1), max_pause

    async def start(self) -> None:
        if self._publisher is not None:
            await self._publisher.start()

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()

    def _headers(self, delivery: Delivery, error: BaseException) -> dict[str, str]:
        headers = {
            "dlq-original-topic": delivery.topic,
            "dlq-original-partition": str(delivery.partition),
            "dlq-original-offset": str(delivery.offset),
            "dlq-error-class": type(error).__name__,
            "dlq-failed-at": self._clock().isoformat(),
        }
        # Our own reasons hold no secret; another exception's text might, so only its class.
        if isinstance(error, Undeliverable | Unavailable):
            headers["dlq-error"] = str(error)[:200]
        return headers

    async def put(self, delivery: Delivery, error: BaseException) -> None:
        """Returns only once the topic has it (trying again, backing off, for as long as it
        takes), so the acknowledgement that follows loses nothing."""
        headers = self._headers(delivery, error)
        where = f"{delivery.topic or '?'}[{delivery.partition}]@{delivery.offset}"
        if self._publisher is None:
            log.error("command at %s dropped (%s): no dead-letter topic", where, type(error))
            return
        letter = Published(self._topic, delivery.key or "", delivery.value, headers)
        pause = self._first_pause
        while True:
            try:
                await self._publisher.publish([letter])
                break
            except Exception as exc:
                log.warning("dead letter not published (%s): trying again in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
        log.warning(
            "command at %s dead-lettered to %s: %s",
            where,
            self._topic,
            headers.get("dlq-error", headers["dlq-error-class"]),
        )
