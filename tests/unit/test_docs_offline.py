"""`/docs` and `/redoc` work with no internet: every script, style and image they name is served
by Gatehouse itself, with the right type, under a CSP that lets nothing else in."""

from __future__ import annotations

import re

import pytest

from gatehouse.web import docs

from .api_client import Api

REFERENCE = re.compile(r'\b(?:src|href|spec-url)="([^"]*)"')
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def directives(csp: str) -> dict[str, list[str]]:
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {name: values for name, *values in parts}


@pytest.mark.parametrize("page", [docs.DOCS, docs.REDOC])
async def test_pages_name_only_same_origin_files_and_each_is_served(api: Api, page: str) -> None:
    reply = await api.client.get(page)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.text
    # No host anywhere in the page: a CDN URL would leave the page blank offline.
    assert "http://" not in html and "https://" not in html and "//" not in html
    # Every script is a file: the page runs no inline script.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attributes and not body for attributes, body in scripts)
    urls = REFERENCE.findall(html)
    wanted = {docs.SWAGGER_INIT} if page == docs.DOCS else {"/openapi.json"}
    assert wanted <= set(urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await api.client.get(url)
        assert asset.status_code == 200, url
        expected = TYPES[url[url.rindex(".") :]]
        assert asset.headers["content-type"].startswith(expected), (url, asset.headers)
        assert asset.content, url
    init = (await api.client.get(docs.SWAGGER_INIT)).text
    assert '"url": "/openapi.json"' in init and "http" not in init


@pytest.mark.parametrize("page", [docs.DOCS, docs.REDOC])
async def test_the_pages_csp_allows_this_origin_only(api: Api, page: str) -> None:
    reply = await api.client.get(page)
    policy = directives(reply.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no other host
    for values in policy.values():
        assert not any("." in v or "*" in v or v.startswith("http") for v in values), policy
    if page == docs.DOCS:
        assert policy["style-src"] == ["'self'"]


async def test_only_the_bundled_files_are_served(api: Api) -> None:
    bundle = await api.client.get(f"{docs.ASSETS}/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    assert bundle.headers["content-security-policy"] == docs.ASSET_CSP
    for name in ("core.py", "..%2Fcore.py", "__init__.py", "nope.js"):
        assert (await api.client.get(f"{docs.ASSETS}/{name}")).status_code == 404, name
