"""Per-client-address and per-account rate limits for the HTTP routes, and the client address
itself: X-Forwarded-For is believed only from configured trusted proxies."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import Request

from gatehouse.errors import RateLimited
from gatehouse.web.deps import services_of

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: Request) -> str:
    """The peer address, or, behind trusted proxies, the right-most forwarded address that is
    not itself a trusted proxy (the left-most entries are whatever the client claimed)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(tuple(services_of(request).settings.trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


async def guard(request: Request, action: str) -> None:
    """Count this request against `<action>_ip`; 429 with Retry-After once it is exhausted. The
    `<action>_account` limits are counted in the flows (`selfservice/limits.py`), so every door
    meets them, not only this one."""
    svc = services_of(request)
    wait = await svc.ctx.limiter.hit(f"{action}_ip", svc.ctx.blind_index("ip", client_ip(request)))
    if wait:
        raise RateLimited(wait)
