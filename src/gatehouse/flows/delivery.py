"""The courier's use case: open a `send-otp` command, render it, hand it to its channel."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gatehouse.domain import events
from gatehouse.domain.crypto import DecryptionError, Keyring
from gatehouse.ports import Channel, ChannelError, Clock, OutgoingMessage, Renderer

log = logging.getLogger(__name__)


class Undeliverable(Exception):
    """The command can never be delivered (malformed, expired, unknown channel or template)."""


def prepare(raw: bytes, keyring: Keyring, renderer: Renderer, now: datetime) -> OutgoingMessage:
    try:
        command: dict[str, Any] = json.loads(raw)
        message_id = str(command["id"])
        expires_at = datetime.fromisoformat(str(command["expires_at"]).replace("Z", "+00:00"))
        variables = {str(k): str(v) for k, v in (command.get("variables") or {}).items()}
        if command.get("code_ciphertext"):
            variables["code"] = keyring.decrypt(
                command["code_ciphertext"], events.code_context(message_id)
            )
        subject, body = renderer.render(str(command["template"]), variables)
        channel, to = str(command["channel"]), str(command["to"])
    except (ValueError, KeyError, TypeError, DecryptionError) as exc:
        raise Undeliverable(f"malformed delivery command: {type(exc).__name__}") from exc
    except Exception as exc:
        raise Undeliverable(f"cannot render: {exc}") from exc
    # A code that reaches the user after it expired is worse than none: it cannot work.
    if expires_at <= now:
        raise Undeliverable("expired before it could be sent")
    return OutgoingMessage(id=message_id, channel=channel, to=to, subject=subject, body=body)


async def deliver(
    raw: bytes,
    *,
    keyring: Keyring,
    renderer: Renderer,
    channels: Mapping[str, Channel],
    clock: Clock,
) -> str:
    """Returns the outcome (`sent`, `abandoned`); raises `ChannelError` on a transient failure so
    the caller can retry."""
    try:
        message = prepare(raw, keyring, renderer, clock())
    except Undeliverable as exc:
        log.warning("delivery abandoned: %s", exc)
        return "abandoned"
    channel = channels.get(message.channel)
    if channel is None:
        log.warning("delivery %s abandoned: no %s channel configured", message.id, message.channel)
        return "abandoned"
    try:
        await channel.send(message)
    except ChannelError as exc:
        if exc.permanent:
            log.warning("delivery %s abandoned: %s", message.id, exc)
            return "abandoned"
        raise
    log.info("delivery %s sent via %s", message.id, channel.name)
    return "sent"
