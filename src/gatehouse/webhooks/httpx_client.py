"""`ports.webhooks.WebhookClient` on httpx: one POST per attempt, redirects not followed, at most
`max_answer` bytes of the answer read, a total deadline of `timeout`. Unless private targets are
allowed, the host is resolved at every attempt, refused when any address is not public, and the
connection made to the address checked (Host header and TLS name kept), so a DNS answer that
changes between the check and the connection (rebinding) reaches nothing private."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from gatehouse.domain.webhooks import MAX_ERROR, public_address
from gatehouse.errors import InvalidInput
from gatehouse.ports.webhooks import Attempt

REFUSED = "url: resolves to a private, loopback, link-local or reserved address"


@dataclass
class _Pool:
    http: httpx.AsyncClient
    busy: int = 0  # posts in flight on it


class HttpxWebhookClient:
    """One connection pool per origin (scheme, host and port as registered): an endpoint's
    connections are kept alive between its deliveries, a slow endpoint's fill only its own pool,
    and a connection made to the checked address of one host is never reused for another host
    on the same address (its TLS name is that host's). At most `pools` are kept; past that the
    least recently used idle one is closed."""

    def __init__(
        self,
        timeout: float = 10.0,
        allow_private: bool = False,
        max_answer: int = 65536,
        pools: int = 256,
    ):
        self._timeout, self._allow_private, self._max = timeout, allow_private, max_answer
        self._pools: OrderedDict[str, _Pool] = OrderedDict()  # made at the first post
        self._most = pools

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
            trust_env=False,  # no proxy from the environment: it would skip the address check
        )

    async def _pool(self, url: str) -> _Pool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1].lower()}"
        pool = self._pools.get(origin)
        if pool is not None:
            self._pools.move_to_end(origin)
            return pool
        pool = self._pools[origin] = _Pool(self._client())
        while len(self._pools) > self._most:
            idle = next((o for o, p in self._pools.items() if p.busy == 0 and p is not pool), None)
            if idle is None:
                break
            await self._pools.pop(idle).http.aclose()
        return pool

    @staticmethod
    async def _addresses(host: str, port: int) -> list[str]:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            return []
        return [str(info[4][0]) for info in found]

    async def _public(self, url: str) -> tuple[str, str]:
        """(the host's first address, the host) once every address is public."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = await self._addresses(host, port)
        if not addresses:
            raise InvalidInput("url: the host does not resolve")
        if not all(public_address(a) for a in addresses):
            raise InvalidInput(REFUSED)
        return addresses[0], host

    async def check(self, url: str) -> None:
        await self._public(url)

    def _pinned(self, url: str, address: str) -> str:
        parts = urlsplit(url)
        literal = f"[{address}]" if ":" in address else address
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        start = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - start) * 1000)

        target, extensions, sent = url, {}, dict(headers)
        if not self._allow_private:
            try:
                address, host = await self._public(url)
            except InvalidInput as exc:
                return Attempt(None, exc.message[:MAX_ERROR], took())
            target = self._pinned(url, address)
            sent["host"] = urlsplit(url).netloc.rsplit("@", 1)[-1]
            extensions["sni_hostname"] = host
        pool = await self._pool(url)
        pool.busy += 1
        try:
            async with asyncio.timeout(self._timeout):
                request = pool.http.build_request(
                    "POST", target, content=body, headers=sent, extensions=extensions
                )
                response = await pool.http.send(request, stream=True)
                try:
                    read = bytearray()
                    async for chunk in response.aiter_raw():
                        read += chunk
                        if len(read) >= self._max:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return Attempt(None, f"timeout after {self._timeout:g}s", took())
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR], took())
        finally:
            pool.busy -= 1
        code = response.status_code
        excerpt = bytes(read[:100]).decode("utf-8", errors="replace")
        error = None if 200 <= code < 300 else f"HTTP {code}: {excerpt}"[:MAX_ERROR]
        return Attempt(code, error, took(), excerpt)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.http.aclose()
