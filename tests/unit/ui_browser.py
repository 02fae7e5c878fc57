"""The self-service pages in-process for the unit suite: real Services on SQLite (as the `api`
fixture), settings of the test's choosing, and "browsers": HTTP clients with cookie jars of their
own that read a page's CSRF token and post its forms as a browser would."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyotp
import pytest

from gatehouse.bootstrap import Services, build
from gatehouse.entrypoints.app import create_app
from gatehouse.security import memory
from gatehouse.storage.migrate import upgrade

from .api_client import PASSWORD, Api
from .helpers import FakeClock, offline_settings

ORIGIN = "http://localhost:8000"  # GATEHOUSE_PUBLIC_URL's default: the pages' own origin
EN = {"accept-language": "en"}
ES = {"accept-language": "es-ES,es;q=0.9,en;q=0.5"}


class Html(HTMLParser):
    """What a test reads of a page: every element with its attributes, the text of each label
    (by its `for`), of each button and of the elements with an id."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.labels: dict[str, str] = {}
        self.buttons: list[str] = []
        self.texts: dict[str, str] = {}
        self.inline_scripts = 0
        self._open: list[tuple[str, dict[str, str], list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.elements.append((tag, found))
        if tag not in ("input", "meta", "link", "img", "br"):
            self._open.append((tag, found, []))

    def handle_data(self, data: str) -> None:
        for _tag, _attrs, chunks in self._open:
            chunks.append(data)
        if self._open and self._open[-1][0] == "script" and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, attrs, chunks = self._open.pop()
            text = " ".join("".join(chunks).split())
            if name == "label" and "for" in attrs:
                self.labels[attrs["for"]] = text
            if name == "button":
                self.buttons.append(text)
            if "id" in attrs:
                self.texts[attrs["id"]] = text
            if name == tag:
                break

    def by_id(self, element_id: str) -> dict[str, str] | None:
        return next((a for _t, a in self.elements if a.get("id") == element_id), None)

    def value(self, element_id: str) -> str:
        found = self.by_id(element_id)
        assert found is not None, element_id
        return found.get("value", "")


@dataclass
class Browser:
    """One browser: its own cookies, the last page it was shown."""

    client: httpx.AsyncClient
    headers: dict[str, str] = field(default_factory=lambda: dict(EN))
    last: httpx.Response | None = None

    async def get(self, path: str, **headers: str) -> httpx.Response:
        self.last = await self.client.get(path, headers={**self.headers, **headers})
        return self.last

    def csrf(self) -> str:
        assert self.last is not None
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', self.last.text)
        assert found, "the page has no CSRF token"
        return found.group(1)

    async def post(
        self, path: str, fields: dict[str, str], *, csrf: str | None = "", **headers: str
    ) -> httpx.Response:
        """A form post; `csrf=""` takes the token of the last page shown, None sends none."""
        body = dict(fields)
        if csrf is not None:
            body["csrf"] = csrf or self.csrf()
        sent = {"origin": ORIGIN, "sec-fetch-site": "same-origin", **self.headers, **headers}
        self.last = await self.client.post(path, data=body, headers=sent)
        return self.last

    async def api(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """A call of the pages' JSON API with the last page's CSRF token, as their scripts do."""
        headers = {"origin": ORIGIN, "x-csrf-token": self.csrf(), **self.headers}
        return await self.client.post(path, json=body or {}, headers=headers)

    def page(self) -> Html:
        assert self.last is not None
        return Html(self.last.text)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.client.cookies.jar if c.name == name), None)


@dataclass
class Pages:
    services: Services
    clock: FakeClock
    transport: httpx.ASGITransport
    base_url: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def browser(self, headers: dict[str, str] | None = None) -> Browser:
        client = httpx.AsyncClient(transport=self.transport, base_url=self.base_url)
        self.clients.append(client)
        return Browser(client, dict(headers or EN))

    def api(self) -> Api:
        """The JSON API beside the pages (tests/unit/api_client.py), on the same services."""
        return Api(self.browser().client, self.services, self.clock)

    async def account(self, email: str = "ada@example.com") -> Browser:
        """A browser signed in to a new account (signed up and verified through the API)."""
        await self.api().signed_up(email)
        return await self.signed_in(email)

    async def signed_in(self, email: str, password: str = PASSWORD) -> Browser:
        browser = self.browser()
        await browser.get("/ui/signin")
        answer = await browser.post("/ui/signin", {"email": email, "password": password})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui/account"
        return browser

    def totp_code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.clock.now)


@contextlib.asynccontextmanager
async def open_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_url: str = ORIGIN, **overrides: Any
) -> AsyncIterator[Pages]:
    base: dict[str, Any] = {
        "env": "development",
        "jwt_algorithms": ["EdDSA"],
        "jwt_secret": "",
        "argon2_parallelism": 1,
        "hash_workers": 2,
        "rate_limits": {},
        "answer_floor_ms": 0,
    }
    settings = offline_settings(tmp_path, **{**base, **overrides})
    clock = FakeClock()
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=clock.monotonic))
    services = build(settings, clock=clock)
    pages: Pages | None = None
    try:
        await upgrade(services.engine)
        transport = httpx.ASGITransport(app=create_app(services))
        pages = Pages(services, clock, transport, base_url)
        yield pages
    finally:
        for client in pages.clients if pages else []:
            await client.aclose()
        await services.aclose()
