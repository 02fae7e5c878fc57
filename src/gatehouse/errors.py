"""The one exception tree of Gatehouse; `web.errors` maps the answers to HTTP statuses.

    Exception
    ├── GatehouseError          an answer to the caller: `code`, `message`, `errors`
    │   ├── InvalidInput        422  a field the rules refuse
    │   ├── InvalidCode         400  wrong, spent or expired one-time code
    │   ├── InvalidCredentials  401  wrong email or password (and unknown accounts alike)
    │   ├── InvalidToken        401  access or refresh token not accepted
    │   ├── Forbidden           403
    │   │   └── ReauthRequired       a sensitive change without a recent authentication
    │   ├── NotFound            404
    │   ├── Conflict            409
    │   │   └── AccountExists        a unique email or phone taken, as storage found it
    │   ├── RateLimited         429  with `retry_after`
    │   └── Unavailable         503  a dependency is down: jobs are retried, HTTP says retry
    ├── TokenError              the domain's "this access token is not accepted"
    ├── DecryptionError         a ciphertext tampered with or under an unknown key
    ├── JobFailed               what a failed job attempt records (its kind, never its text)
    ├── ChannelError            a courier channel could not hand a message over; `permanent`
    └── Undeliverable           a `send-otp` command, or one route of it, can never be sent
        ├── Unreadable          the command itself cannot be opened: recorded, dead-lettered
        └── UnknownTemplate     no template of that name: that route cannot be rendered

A job completes with `success: false` on a GatehouseError other than Unavailable, and is
retried on anything else. This module imports nothing, so the domain may raise from it too."""

from __future__ import annotations

from typing import Any


class GatehouseError(Exception):
    """Base of every error a flow raises on purpose; `code` is the machine-readable name."""

    code = "error"
    message = "Request failed"

    def __init__(self, message: str | None = None, *, errors: list[dict[str, Any]] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.errors = errors or []


class InvalidInput(GatehouseError):
    code = "invalid_input"
    message = "Invalid input"


class InvalidCode(GatehouseError):
    code = "invalid_code"
    message = "Invalid or expired verification code"


class InvalidCredentials(GatehouseError):
    code = "invalid_credentials"
    message = "Invalid email or password"


class InvalidToken(GatehouseError):
    code = "invalid_token"
    message = "Invalid or expired token"


class Forbidden(GatehouseError):
    code = "forbidden"
    message = "Forbidden"


class ReauthRequired(Forbidden):
    """A sensitive change asked for by a session that has not proved a factor recently."""

    code = "reauth_required"
    message = "This change needs a recent sign-in: confirm your password first"


class NotFound(GatehouseError):
    code = "not_found"
    message = "Not found"


class Conflict(GatehouseError):
    code = "conflict"
    message = "Conflict"


class AccountExists(Conflict):
    """A unique email or phone already taken, as the storage found it."""

    message = "An account with these details already exists"


class RateLimited(GatehouseError):
    code = "rate_limited"
    message = "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(GatehouseError):
    """A dependency (database, Redis, Kafka) cannot be reached; callers may retry."""

    code = "unavailable"
    message = "Service temporarily unavailable"


class TokenError(Exception):
    """Any reason an access token is not accepted; deliberately one type, one message. The
    domain raises it; flows answer `InvalidToken`."""


class DecryptionError(Exception):
    """Ciphertext tampered with, truncated, or under a key id the keyring does not hold."""


class JobFailed(Exception):
    """What the queue records for a failed attempt: the kind of error, not its text, which may
    quote job data or driver parameters (BullMQ keeps it in Redis as `failedReason`)."""


# The courier's


class ChannelError(Exception):
    """A channel could not hand a message to its provider; `permanent` says whether trying again
    can help (a refused address never will, a timeout or a 503 may)."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class Undeliverable(Exception):
    """A command, or one route of it, can never be delivered: trying again cannot help."""


class Unreadable(Undeliverable):
    """The command itself cannot be opened (malformed, its code sealed for another message):
    recorded abandoned when it has an id, then dead-lettered. `message_id` and `template` are
    what could be read of it."""

    def __init__(self, reason: str, message_id: str | None = None, template: str = ""):
        super().__init__(reason)
        self.message_id, self.template = message_id, template


class UnknownTemplate(Undeliverable):
    """No message template of that name ships with the package."""
