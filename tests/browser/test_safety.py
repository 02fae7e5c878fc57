"""What keeps the pages safe, seen from a real browser (DESIGN 10, issue 14 point 3): `return_to`
only to an allow-listed origin, a cross-site form post refused with 403, the session cookie
HttpOnly and SameSite=Lax, a strict CSP and nothing loaded from another origin."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import create_account
from tests.browser.flows import (
    ACCOUNT_URL,
    EN,
    button,
    expect_account,
    fill_sign_in,
    open_sign_in,
    sign_in,
)
from tests.browser.harness import App, Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_return_to_an_allow_listed_origin_and_nowhere_else(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox, app: App
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    allowed = f"{app.url}/welcome?from=gatehouse"
    open_sign_in(visitor, return_to=allowed)
    fill_sign_in(visitor, account.email, account.password)
    expect(visitor.page).to_have_url(allowed)
    expect(visitor.page.get_by_role("heading", name="Application home")).to_be_visible()

    port = app.url.rsplit(":", 1)[1]
    refused = [
        "https://evil.example/",
        "//evil.example/",
        f"http://127.0.0.1:{port}.evil.example/",  # the allowed origin as a prefix
        f"http://user@127.0.0.1:{port}/",
        "javascript:alert(document.cookie)",
        "/\\evil.example",
    ]
    for target in refused:
        visitor.context.clear_cookies()
        open_sign_in(visitor, return_to=target)
        fill_sign_in(visitor, account.email, account.password)
        expect(visitor.page).to_have_url(ACCOUNT_URL)
        assert visitor.page.url.startswith(gatehouse.base), (target, visitor.page.url)


def form_fields(page: Any, form: Any) -> dict[str, str]:
    fields: dict[str, str] = page.evaluate(
        """(form) => Object.fromEntries([...new FormData(form).entries()])""",
        form.element_handle(),
    )
    return fields


def post_from_elsewhere(visitor: Visitor, app: App, action: str, fields: dict[str, str]) -> Any:
    """A page of the other site posts a form to `action` (the way a hostile page would): the
    answer to that navigation."""
    page = visitor.page
    page.goto(f"{app.url}/attack")
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    page.set_content(
        f'<!doctype html><html lang="en"><body><form method="post" action="{html.escape(action)}">'
        f'{inputs}<button type="submit">Go</button></form></body></html>'
    )
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Go").click()
    return navigation.value


def test_a_cross_site_form_post_to_the_account_is_refused(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox, app: App
) -> None:
    account = create_account(gatehouse, mail)
    victim = browse("desktop")
    sign_in(victim, account.email, account.password)
    page = victim.page
    form = page.locator("form").filter(has=button(page, "Sign out everywhere"))
    action = form.evaluate("(f) => f.action")
    fields = form_fields(page, form)
    assert any("csrf" in name.lower() for name in fields), fields
    # Without the CSRF token, and even with it (the cookie, SameSite=Lax, stays home anyway).
    forged = {k: v for k, v in fields.items() if "csrf" not in k.lower()}
    for attempt in (forged, fields):
        response = post_from_elsewhere(victim, app, action, attempt)
        assert response is not None and response.status == 403, (attempt.keys(), response)
    victim.goto("/ui/account")
    expect_account(victim)  # still signed in: nothing was ended


def test_a_cross_site_sign_in_is_refused(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox, app: App
) -> None:
    """Login CSRF: a sign-in posted from another site, with the right password, opens no
    session in the browser."""
    account = create_account(gatehouse, mail)
    stranger = browse("desktop")
    open_sign_in(stranger)
    signin = stranger.page.locator("form").filter(has=button(stranger.page, "Sign in"))
    action = signin.evaluate("(f) => f.action")
    fields = form_fields(stranger.page, signin)
    fields.update(email=account.email, password=account.password)
    response = post_from_elsewhere(stranger, app, action, fields)
    assert response is not None and response.status == 403
    stranger.goto("/ui/account")
    expect(stranger.page).not_to_have_url(ACCOUNT_URL)


def test_the_session_cookie_the_csp_and_no_other_origin(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    origins: set[str] = set()
    visitor.page.on("request", lambda r: origins.add(re.sub(r"^(\w+://[^/]+).*$", r"\1", r.url)))
    for path in ("/ui/signup", "/ui/signin", "/ui/recover", "/ui/verify"):
        response = visitor.goto(path)
        assert response is not None and response.ok, (path, response and response.status)
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp or "default-src 'self'" in csp, (path, csp)
        assert "unsafe-inline" not in csp.split("script-src")[-1].split(";")[0], (path, csp)
        assert "unsafe-eval" not in csp, (path, csp)
    sign_in(visitor, account.email, account.password)
    # Everything the account page loads, its socket's start included.
    expect(visitor.page.locator("#live-status")).to_have_text(EN("live_on"))
    assert origins == {gatehouse.base}, origins  # no CDN, nothing from elsewhere

    cookies = visitor.context.cookies()
    session = [c for c in cookies if c["httpOnly"]]
    assert session, cookies
    for cookie in session:
        assert cookie["sameSite"] == "Lax", cookie
        assert cookie["secure"] is False  # http: `Secure` and `__Host-` are for https
    # The page's own script cannot read the session cookie.
    readable = visitor.page.evaluate("() => document.cookie")
    assert all(c["value"] not in readable for c in session)
