"""The one exception tree; `web.errors` maps it to HTTP statuses and the envelope."""

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
