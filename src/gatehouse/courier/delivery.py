"""The courier's decision: given a `send-otp` command and its history, one try and its outcome."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.errors import ChannelError, DecryptionError, Undeliverable, Unreadable
from gatehouse.ports import Channel, Clock, OutgoingMessage, Renderer

log = logging.getLogger(__name__)

PHONE_CHANNELS = frozenset({"sms", "whatsapp"})
MAX_ID = 36  # the `deliveries.id` column: a longer id cannot be recorded, so it is not trusted
MAX_ERROR = 200  # the `deliveries.last_error` column, and an event's `reason`
EXPIRED = "expired before it could be sent"


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach the recipient: for phone channels `to` is masked, the number sealed."""

    channel: str
    to: str
    to_ciphertext: str | None


@dataclass(frozen=True, slots=True)
class Command:
    """A `send-otp` command, opened: its code among `variables`, its routes in fallback order."""

    id: str
    key: str  # its events' key: the command's record key, so they stay in order with the user's
    template: str
    variables: dict[str, str]
    expires_at: datetime
    routes: tuple[Route, ...]  # the command's own channel first, then its fallbacks


def _route(entry: Any) -> Route:
    sealed = entry.get("to_ciphertext")
    return Route(str(entry["channel"]), str(entry["to"]), str(sealed) if sealed else None)


def parse(raw: bytes, keyring: Keyring, key: str | None = None) -> Command:
    """Raises `Unreadable`, with what could be read of the id and template, for anything else."""
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
    return Command(message_id, key or message_id, template, variables, expires_at, routes)


def compose(
    command: Command, route: Route, keyring: Keyring, renderer: Renderer
) -> OutgoingMessage:
    """The message for one route; raises `Undeliverable` when this route cannot be used."""
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
    except Exception as exc:  # `UnknownTemplate` from ours; another renderer's are its business
        raise Undeliverable(f"cannot render template {command.template!r}") from exc
    return OutgoingMessage(id=command.id, channel=route.channel, to=to, subject=subject, body=body)


# --- what one command has gone through, and what one try came to -----------------------------


@dataclass(frozen=True, slots=True)
class History:
    """Provider calls so far (every channel, every courier: the record's count), the route in
    hand and its tries, and the last failure (`channel` is where it happened)."""

    attempts: int = 0
    route: int = 0
    tries: int = 0
    channel: str | None = None
    error: str | None = None

    def failed(self, channel: str, reason: str, *, tried: bool) -> History:
        return replace(
            self,
            attempts=self.attempts + tried,
            tries=self.tries + tried,
            channel=channel,
            error=f"{channel}: {reason}"[:MAX_ERROR],
        )

    def resumed(self, attempts: int) -> History:
        """After the lease is renewed: keep counting from the record if it counted more."""
        return replace(self, attempts=max(self.attempts, attempts))


@dataclass(frozen=True, slots=True)
class Sent:
    """Final: the provider took the message on `channel` (`history` counts that try)."""

    channel: str
    history: History


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure with tries left on this channel: the same route after `after` s."""

    after: float
    history: History


@dataclass(frozen=True, slots=True)
class FallBack:
    """This route is done with (refused for good, out of tries, or unusable): the next, now."""

    history: History  # already on the next route


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Final: expired, or no route left; `reason` is recorded and told in the event."""

    reason: str
    history: History


Done = Sent | Abandoned
Outcome = Sent | RetryLater | FallBack | Abandoned


class Result(StrEnum):
    """What handling one command came to, as the courier answers and counts it."""

    SENT = "sent"
    ABANDONED = "abandoned"
    DUPLICATE = "duplicate"  # an outcome was recorded already: not sent again
    HELD = "held"  # another courier's live lease holds it
    DEAD_LETTERED = "dead-lettered"


@dataclass(frozen=True, slots=True)
class Retry:
    """Each channel gets `attempts` tries while its failures are transient, `first_backoff`
    seconds apart and doubling; a permanent failure, or the last try's, moves to the next."""

    attempts: int = 1
    first_backoff: float = 0.0

    def after(self, tries: int) -> float:
        return self.first_backoff * 2.0 ** (tries - 1)


def _done_with_route(command: Command, history: History) -> FallBack | Abandoned:
    if history.route + 1 < len(command.routes):
        return FallBack(replace(history, route=history.route + 1, tries=0))
    return Abandoned(history.error or "no route", history)


def _unusable(command: Command, history: History, channel: str, reason: str) -> Outcome:
    log.warning("delivery %s on %s failed: %s", command.id, channel, reason)
    return _done_with_route(command, history.failed(channel, reason, tried=False))


async def decide(
    command: Command,
    history: History,
    *,
    channels: Mapping[str, Channel],
    keyring: Keyring,
    renderer: Renderer,
    clock: Clock,
    retry: Retry,
) -> Outcome:
    """Try the route `history` is on, once, and classify what happened. The provider call is
    the only wait in here: a cancellation during `decide` is one during a send."""
    route = command.routes[history.route]
    channel = channels.get(route.channel)
    if channel is None:
        return _unusable(command, history, route.channel, "no such channel configured")
    try:
        message = compose(command, route, keyring, renderer)
    except Undeliverable as exc:
        return _unusable(command, history, route.channel, str(exc))
    # Checked before every try: a code that arrives after it expired cannot work.
    if command.expires_at <= clock():
        return Abandoned(EXPIRED, history)
    try:
        await channel.send(message)
    except ChannelError as exc:
        log.warning("delivery %s on %s failed: %s", command.id, route.channel, exc)
        tried = history.failed(route.channel, str(exc), tried=True)
        if not exc.permanent and tried.tries < retry.attempts:
            return RetryLater(retry.after(tried.tries), tried)
        return _done_with_route(command, tried)
    return Sent(route.channel, replace(history, attempts=history.attempts + 1))
