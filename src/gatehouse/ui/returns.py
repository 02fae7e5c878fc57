"""Where a sign-in sends the browser (`?return_to=`): an address on one of the application origins
of GATEHOUSE_UI_RETURN_TO, else the account page. No open redirect: a scheme-relative `//host`,
backslashes, credentials before the host, control characters, `javascript:` and anything not
written as a plain http(s) URL on a listed origin all go to the account page."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from gatehouse.config import web_origin

ACCOUNT = "/ui/account"
MAX_LENGTH = 2048


def allowed(value: str | None, origins: Collection[str]) -> str | None:
    """`value` itself when it is an absolute http(s) URL on one of `origins`, else None."""
    if not value or len(value) > MAX_LENGTH or not origins:
        return None
    # Browsers drop tabs and newlines and read "\" as "/" in URLs: whatever would read one way
    # here and another way there is refused outright.
    if any(c <= " " or c in "\\\x7f" for c in value):
        return None
    try:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            return None
        origin = web_origin(value)
    except ValueError:  # a port that is not a number, a bracket left open
        return None
    return value if origin in origins else None


def target(value: str | None, origins: Collection[str]) -> str:
    """The address to send a browser to after sign-in."""
    return allowed(value, origins) or ACCOUNT
