"""`ports.webhooks.WebhookClient` on httpx: one POST per attempt, redirects not followed, at most
`max_answer` bytes of the answer read, a total deadline of `timeout`. Unless private targets are
allowed, the host is resolved at every attempt, refused when any address is not public, and the
connection made to the address checked (Host header and TLS name kept), so a DNS answer that
changes between the check and the connection (rebinding) reaches nothing private."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from gatehouse.domain.webhooks import MAX_ERROR, public_address
from gatehouse.errors import InvalidInput
from gatehouse.ports.webhooks import Attempt

REFUSED = "url: resolves to a private, loopback, link-local or reserved address"


class HttpxWebhookClient:
    def __init__(self, timeout: float = 10.0, allow_private: bool = False, max_answer: int = 65536):
        self._timeout, self._allow_private, self._max = timeout, allow_private, max_answer
        self._http: httpx.AsyncClient | None = None  # made at the first post

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
                limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                trust_env=False,  # no proxy from the environment: it would skip the address check
            )
        return self._http

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
        try:
            async with asyncio.timeout(self._timeout):
                request = self._client.build_request(
                    "POST", target, content=body, headers=sent, extensions=extensions
                )
                response = await self._client.send(request, stream=True)
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
        code = response.status_code
        excerpt = bytes(read[:100]).decode("utf-8", errors="replace")
        error = None if 200 <= code < 300 else f"HTTP {code}: {excerpt}"[:MAX_ERROR]
        return Attempt(code, error, took(), excerpt)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
