"""The courier's use case: open a `send-otp` command, send it on its channel or, when that channel
fails for good, on its fallbacks in order; retry what is transient; record the outcome with its
event. Returns `sent`, `abandoned`, or `duplicate` for a command already handled."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.crypto import DecryptionError, Keyring
from gatehouse.domain.events import OutboxMessage
from gatehouse.ports import (
    Channel,
    ChannelError,
    Clock,
    DeliveryLog,
    DeliveryRecord,
    OutgoingMessage,
    Renderer,
)

log = logging.getLogger(__name__)

SENDING, SENT, ABANDONED, DUPLICATE = "sending", "sent", "abandoned", "duplicate"
PHONE_CHANNELS = frozenset({"sms", "whatsapp"})
MAX_ID = 36  # the `deliveries.id` column: a longer id cannot be recorded, so it is not trusted
MAX_ERROR = 200


class Undeliverable(Exception):
    """The command can never be delivered (malformed, undecryptable code)."""

    def __init__(self, reason: str, message_id: str | None = None, template: str = ""):
        super().__init__(reason)
        self.message_id, self.template = message_id, template


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach the recipient: for phone channels `to` is masked, the number sealed."""

    channel: str
    to: str
    to_ciphertext: str | None


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    template: str
    variables: dict[str, str]
    expires_at: datetime
    routes: tuple[Route, ...]  # the command's own channel first, then its fallbacks


def _route(entry: Any) -> Route:
    sealed = entry.get("to_ciphertext")
    return Route(str(entry["channel"]), str(entry["to"]), str(sealed) if sealed else None)


def parse(raw: bytes, keyring: Keyring) -> Command:
    message_id: str | None = None
    template = ""
    try:
        command = json.loads(raw)
        candidate = str(command["id"])
        message_id = candidate if 0 < len(candidate) <= MAX_ID else None
        template = str(command["template"])
        expires_at = datetime.fromisoformat(str(command["expires_at"]).replace("Z", "+00:00"))
        if expires_at.tzinfo is None:  # comparing it with an aware clock would raise
            raise ValueError("expires_at without a UTC offset")
        variables = {str(k): str(v) for k, v in (command.get("variables") or {}).items()}
        if message_id is None:
            raise ValueError("missing or oversized id")
        if command.get("code_ciphertext"):
            variables["code"] = keyring.decrypt(
                command["code_ciphertext"], events.code_context(message_id)
            )
        routes = tuple(_route(e) for e in [command, *(command.get("fallbacks") or [])])
    except (ValueError, KeyError, TypeError, AttributeError, DecryptionError) as exc:
        reason = f"malformed command: {type(exc).__name__}"
        raise Undeliverable(reason, message_id, template) from exc
    return Command(message_id, template, variables, expires_at, routes)


def _message(
    command: Command, route: Route, keyring: Keyring, renderer: Renderer
) -> OutgoingMessage:
    """Raises `Undeliverable` when this route cannot be used (the others may still be)."""
    to = route.to
    if route.to_ciphertext:
        try:
            to = keyring.decrypt(route.to_ciphertext, events.recipient_context(command.id))
        except (DecryptionError, ValueError) as exc:
            raise Undeliverable("recipient cannot be decrypted") from exc
    try:
        subject, body = renderer.render(
            command.template, command.variables, short=route.channel in PHONE_CHANNELS
        )
    except Exception as exc:  # the renderer's own error types are an adapter's business
        raise Undeliverable(f"cannot render template {command.template!r}") from exc
    return OutgoingMessage(id=command.id, channel=route.channel, to=to, subject=subject, body=body)


class _NotRecorded:
    """No delivery log: nothing is de-duplicated nor recorded (tools and tests)."""

    async def get(self, message_id: str) -> DeliveryRecord | None:
        return None

    async def record(
        self,
        message_id: str,
        status: str,
        channel: str | None,
        attempts: int,
        error: str | None,
        event: OutboxMessage | None,
        now: datetime,
    ) -> None:
        return None


@dataclass
class _Outcome:
    """What one command has gone through so far, and how it is written down."""

    message_id: str
    key: str
    template: str
    deliveries: DeliveryLog
    clock: Clock
    attempts: int = 0
    channel: str | None = None
    error: str | None = None

    def failed(self, channel: str, reason: str) -> None:
        self.channel, self.error = channel, f"{channel}: {reason}"[:MAX_ERROR]
        log.warning("delivery %s on %s failed: %s", self.message_id, channel, reason)

    async def progress(self) -> None:
        await self.deliveries.record(
            self.message_id, SENDING, self.channel, self.attempts, self.error, None, self.clock()
        )

    async def finish(self, status: str, reason: str | None = None) -> str:
        now = self.clock()
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "channel": self.channel,
            "template": self.template,
        }
        if reason is not None:
            data["reason"] = reason[:MAX_ERROR]
        kind = events.MESSAGE_SENT if status == SENT else events.MESSAGE_ABANDONED
        event: OutboxMessage = events.user_event(kind, self.key, data, now)
        error = self.error if status == SENT else (reason or self.error)
        await self.deliveries.record(
            self.message_id, status, self.channel, self.attempts, error, event, now
        )
        if status == SENT:
            log.info("delivery %s sent via %s", self.message_id, self.channel)
        else:
            log.warning("delivery %s abandoned: %s", self.message_id, reason)
        return status


async def deliver(
    raw: bytes,
    *,
    keyring: Keyring,
    renderer: Renderer,
    channels: Mapping[str, Channel],
    clock: Clock,
    deliveries: DeliveryLog | None = None,
    key: str | None = None,
    attempts: int = 1,
    first_backoff: float = 0.0,
) -> str:
    """Each channel gets up to `attempts` tries, `first_backoff` seconds apart and doubling,
    while its failures are transient; a permanent failure, or a channel still failing after
    its tries, moves to the next fallback. The event of the outcome is keyed by `key` (the
    command's own record key), so it stays in order with the user's other events."""
    store = deliveries or _NotRecorded()
    try:
        command = parse(raw, keyring)
    except Undeliverable as exc:
        if exc.message_id is None:
            log.warning("delivery abandoned: %s", exc)
            return ABANDONED
        outcome = _Outcome(exc.message_id, key or exc.message_id, exc.template, store, clock)
        return await outcome.finish(ABANDONED, str(exc))

    # De-duplication on the message id: Kafka may deliver the same command twice (a crash
    # before the offset commit, a rebalance); a recorded outcome is final.
    previous = await store.get(command.id)
    if previous is not None and previous.status in (SENT, ABANDONED):
        log.info("delivery %s already %s: not sent again", command.id, previous.status)
        return DUPLICATE
    outcome = _Outcome(command.id, key or command.id, command.template, store, clock)
    outcome.attempts = previous.attempts if previous is not None else 0

    for route in command.routes:
        channel = channels.get(route.channel)
        if channel is None:
            outcome.failed(route.channel, "no such channel configured")
            continue
        try:
            message = _message(command, route, keyring, renderer)
        except Undeliverable as exc:
            outcome.failed(route.channel, str(exc))
            continue
        backoff = first_backoff
        for attempt in range(1, attempts + 1):
            # Checked before every try: a code that arrives after it expired cannot work.
            if command.expires_at <= clock():
                return await outcome.finish(ABANDONED, "expired before it could be sent")
            outcome.attempts += 1
            try:
                await channel.send(message)
            except ChannelError as exc:
                outcome.failed(route.channel, str(exc))
                if exc.permanent:
                    break
                if attempt < attempts:
                    await outcome.progress()
                    await asyncio.sleep(backoff)
                    backoff *= 2
                continue
            outcome.channel = route.channel
            return await outcome.finish(SENT)
    return await outcome.finish(ABANDONED, outcome.error or "no route")
