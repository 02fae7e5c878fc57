"""Webhooks' rules, without I/O: endpoints and the event types they take, the Standard Webhooks
signature (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under a `whsec_` secret), the
retry schedule, and which URLs and addresses a delivery may go to (no private networks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from gatehouse.errors import InvalidInput

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 24
MAX_URL = 2048
MAX_EVENTS = 50
MAX_EVENT_TYPE = 100
MAX_DESCRIPTION = 500
MAX_ERROR = 200
EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered receiver: where to POST, which event types (`*`: all; `prefix.*`: a
    family), and its signing secret, encrypted under the data keyring."""

    id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    paused: bool
    secret_ciphertext: str
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return matches(self.events, event_type)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint. `id` is its `webhook-id`, the same on every attempt.
    `user_key` (the event's subject) orders an endpoint's deliveries: one user's next waits
    until the one before is delivered or failed. `expires_at`: after it, no more retries (set
    at the first attempt). While `lease_owner` holds it until `lease_until`, it is in flight."""

    seq: int
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    user_key: str
    body: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    duration_ms: int | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime
    expires_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: `whsec_` and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header's value for one attempt."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """Standard Webhooks headers of one attempt (a fresh timestamp each time, the same id)."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
        "user-agent": "Gatehouse-Webhooks/1",
    }


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """`*` takes everything, `gatehouse.user.*` a family, anything else one type exactly."""
    for pattern in patterns:
        if pattern in (EVERYTHING, event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def event_types(given: Sequence[str]) -> tuple[str, ...]:
    """The event filter as stored: trimmed, de-duplicated, checked."""
    cleaned = tuple(dict.fromkeys(t.strip() for t in given))
    if not cleaned or len(cleaned) > MAX_EVENTS:
        raise InvalidInput(f'events: give 1 to {MAX_EVENTS} event types (or "*")')
    for kind in cleaned:
        if not kind or len(kind) > MAX_EVENT_TYPE or any(c.isspace() for c in kind):
            raise InvalidInput('events: each is an event type, a `prefix.*` or "*"')
    return cleaned


def backoff(
    attempt: int, base: float, cap: float, rand: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds before the next try after `attempt` failed ones: `base` doubling, capped, with
    ±20 % jitter so that endpoints coming back are not hit by every retry at once."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return float(min(cap, delay * rand(0.8, 1.2)))


def public_address(address: str) -> bool:
    """May a delivery connect to this IP? Not a private, loopback, link-local, unspecified,
    multicast or reserved one (nor such an IPv4 inside IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return public_address(str(mapped))
    refused = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )
    return ip.is_global and not refused


def check_url(url: str, *, https_only: bool) -> str:
    """The URL's host, once the URL is acceptable: absolute http(s) (https only in production),
    no credentials, no fragment."""
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise InvalidInput("url: not a URL") from None
    allowed = ("https",) if https_only else ("http", "https")
    if parts.scheme not in allowed or not parts.hostname:
        raise InvalidInput(f"url: an absolute {' or '.join(allowed)} URL")
    if parts.username or parts.password or parts.fragment:
        raise InvalidInput("url: no credentials or fragment")
    return parts.hostname
