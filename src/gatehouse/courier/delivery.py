"""The courier's use case: open a `send-otp` command, take its lease, send it on its channel or,
when that channel fails for good, on its fallbacks in order; retry what is transient; record the
outcome with its event. Returns `sent`, `abandoned`, `duplicate` for a command already handled, or
`held` while another courier's live lease holds it; raises `Unreadable` for a command that cannot
be opened at all, and `Unrecorded` when the outcome could not be written."""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import CancelledError
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gatehouse.courier.record import NotRecorded, Outcome
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.errors import DecryptionError
from gatehouse.ports import (
    ABANDONED,
    SENT,
    Channel,
    ChannelError,
    Clock,
    DeliveryLog,
    OutgoingMessage,
    Renderer,
)

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
PHONE_CHANNELS = frozenset({"sms", "whatsapp"})
MAX_ID = 36  # the `deliveries.id` column: a longer id cannot be recorded, so it is not trusted


class Undeliverable(Exception):
    """The command, or one of its routes, can never be delivered (malformed, undecryptable)."""

    def __init__(self, reason: str, message_id: str | None = None, template: str = ""):
        super().__init__(reason)
        self.message_id, self.template = message_id, template


class Unreadable(Undeliverable):
    """The command itself cannot be opened: recorded abandoned when it has an id, and for the
    courier to dead-letter."""


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
        raise Unreadable(reason, message_id, template) from exc
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
    owner: str | None = None,
    lease: timedelta = LEASE,
) -> str:
    """Each channel gets up to `attempts` tries, `first_backoff` seconds apart and doubling,
    while its failures are transient; a permanent failure, or a channel still failing after
    its tries, moves to the next fallback. The event of the outcome is keyed by `key` (the
    command's own record key), so it stays in order with the user's other events.

    `owner` names the courier in the lease it takes for `lease` (each call is its own owner
    when none is given); the lease must outlast one provider call, and is renewed before each."""
    store = deliveries or NotRecorded()
    owner = owner or events.new_id()
    try:
        command = parse(raw, keyring)
    except Unreadable as exc:
        if exc.message_id is None:
            log.warning("delivery abandoned: %s", exc)
        else:
            outcome = Outcome(
                exc.message_id, key or exc.message_id, exc.template, store, clock, owner, lease
            )
            # Nothing is sent, so a database outage here lets the whole command be tried again
            # (`Unavailable`), until it is recorded and then dead-lettered.
            await outcome.write(ABANDONED, str(exc))
        raise

    # De-duplication and exclusion on the message id: Kafka may deliver the same command twice
    # (a crash before the offset commit, a rebalance) or to two couriers; a recorded outcome is
    # final, and a live lease means another courier is at it.
    outcome = Outcome(command.id, key or command.id, command.template, store, clock, owner, lease)
    answer = await outcome.claim()
    if answer is not None:
        return answer
    try:
        return await _send(command, outcome, keyring, renderer, channels, attempts, first_backoff)
    except CancelledError:
        # Stopped between provider calls: give the message back so the next courier needs not
        # wait for the lease. Stopped during one, the provider may have taken it: the lease is
        # left to expire, and the message to be retried (the at-least-once window below).
        if outcome.holding and not outcome.sending:
            try:
                await outcome.release()
            except Exception:  # the lease expires anyway
                log.warning("delivery %s: lease not released", command.id)
        raise


async def _send(
    command: Command,
    outcome: Outcome,
    keyring: Keyring,
    renderer: Renderer,
    channels: Mapping[str, Channel],
    attempts: int,
    first_backoff: float,
) -> str:
    clock, first = outcome.clock, True
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
            # Renewed before every try but the first: after a backoff the lease may have run
            # out and been taken, or an outcome recorded; then this courier stops here.
            if not first and (lost := await outcome.claim()) is not None:
                return lost
            first = False
            outcome.attempts += 1
            outcome.sending = True
            try:
                await channel.send(message)
            except ChannelError as exc:
                outcome.sending = False
                outcome.failed(route.channel, str(exc))
                if exc.permanent:
                    break
                if attempt < attempts:
                    if (lost := await outcome.progress()) is not None:
                        return lost
                    await asyncio.sleep(backoff)
                    backoff *= 2
                continue
            # AT-LEAST-ONCE WINDOW. The provider has accepted the message; until the outcome
            # below is committed, a crash (or a database that stays down past the courier's
            # budget) leaves the lease to expire and the command unacknowledged, and whoever
            # takes it next sends it again. SMTP and Twilio take no idempotency key, so this one
            # window cannot be closed here: at most one extra copy per message in flight (one
            # per courier process, which handles one message at a time).
            outcome.sending = False
            outcome.channel = route.channel
            return await outcome.finish(SENT)
    return await outcome.finish(ABANDONED, outcome.error or "no route")
