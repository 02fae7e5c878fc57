"""Domain events (CloudEvents 1.0 on `user-events`) and delivery commands (`send-otp`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

USER_EVENTS = "user-events"
SEND_OTP = "send-otp"
# Commands the courier could not process at all (unreadable, or failing for a reason that is not
# the provider's), kept as they came with headers saying where from and why.
SEND_OTP_DLQ = "send-otp.dlq"
SOURCE = "gatehouse"

REGISTERED = "gatehouse.user.registered"
VERIFIED = "gatehouse.user.verified"
LOGGED_IN = "gatehouse.user.logged_in"
LOGIN_FAILED = "gatehouse.user.login_failed"
UPDATED = "gatehouse.user.updated"
PASSWORD_RESET = "gatehouse.user.password_reset"  # noqa: S105 - an event name
DELETED = "gatehouse.user.deleted"
SESSION_REVOKED = "gatehouse.user.session_revoked"
# An operator disabled or enabled the account (data: {"by": "admin"}).
DISABLED = "gatehouse.user.disabled"
ENABLED = "gatehouse.user.enabled"
PHONE_VERIFIED = "gatehouse.user.phone_verified"
MFA_ENABLED = "gatehouse.user.mfa_enabled"
MFA_DISABLED = "gatehouse.user.mfa_disabled"
PASSKEY_ADDED = "gatehouse.user.passkey_added"
PASSKEY_REMOVED = "gatehouse.user.passkey_removed"
# The courier's outcome for one `send-otp` command (data: message_id, channel, template, reason?).
MESSAGE_SENT = "gatehouse.message.sent"
MESSAGE_ABANDONED = "gatehouse.message.abandoned"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One record to publish: written in the same transaction as the state change it reports."""

    id: str
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: datetime

    def payload_text(self) -> str:
        """The payload as stored in the outbox row (compact JSON), whatever the database."""
        return json.dumps(self.payload, separators=(",", ":"))


def new_id() -> str:
    return str(uuid.uuid4())


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def user_event(kind: str, user_id: str, data: dict[str, Any], now: datetime) -> OutboxMessage:
    """A CloudEvent keyed by user id, so one user's events stay ordered in their partition."""
    event_id = new_id()
    payload = {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": kind,
        "time": _iso(now),
        "subject": user_id,
        "datacontenttype": "application/json",
        "data": {"user_id": user_id, **data},
    }
    return OutboxMessage(event_id, USER_EVENTS, user_id, payload, now)


def delivery(
    *,
    key: str,
    channel: str,
    to: str,
    template: str,
    now: datetime,
    expires_at: datetime,
    code_ciphertext: str | None = None,
    locale: str = "en",
    variables: dict[str, str] | None = None,
    message_id: str | None = None,
    to_ciphertext: str | None = None,
    fallbacks: list[dict[str, str | None]] | None = None,
) -> OutboxMessage:
    """A command for the courier. The code travels only as ciphertext the courier can open.

    For phone channels `to` is only a masked number and the real one is in `to_ciphertext`
    (see `recipient_context`), so no phone number rests in Kafka in plaintext. `fallbacks` lists
    `{channel, to, to_ciphertext}` to try in order when a channel fails permanently."""
    message_id = message_id or new_id()
    payload = {
        "id": message_id,
        "channel": channel,
        "to": to,
        "to_ciphertext": to_ciphertext,
        "template": template,
        "locale": locale,
        "code_ciphertext": code_ciphertext,
        "expires_at": _iso(expires_at),
        "variables": variables or {},
        "fallbacks": fallbacks or [],
    }
    return OutboxMessage(message_id, SEND_OTP, key, payload, now)


def code_context(message_id: str) -> str:
    """Associated data binding a code ciphertext to its one delivery message."""
    return f"send-otp:{message_id}"


def recipient_context(message_id: str) -> str:
    """Associated data binding an encrypted phone number to its one delivery message."""
    return f"send-otp-to:{message_id}"
