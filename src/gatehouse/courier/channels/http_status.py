"""How a provider's HTTP status maps to `errors.ChannelError.permanent`: can a retry help."""

from __future__ import annotations

# Request Timeout and Too Many Requests are the provider asking to be tried again later.
RETRYABLE_4XX = frozenset({408, 429})


def is_permanent(status: int) -> bool:
    """4xx (but 408 and 429) will fail the same way every time; 5xx and the rest may pass."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX
