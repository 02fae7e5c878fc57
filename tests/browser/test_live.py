"""The account page hears its account live (DESIGN 10, issue 14 point 2): a second browser signed
in as the same person, signed out from the first (its `Sign out` in the sessions list, then
`Sign out everywhere`), sees itself signed out without a reload; `security.notice` and another
session's end appear as they happen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.accounts import create_account
from tests.browser.flows import (
    EN,
    button,
    expect_signed_out,
    section,
    sign_in,
)
from tests.browser.harness import Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def live(visitor: Visitor) -> None:
    """Wait until the page's socket is connected, then mark the page: it must not reload."""
    expect(visitor.page.locator("#live-status")).to_have_text(EN("live_on"))
    visitor.mark_no_reload()


def signed_out_live(visitor: Visitor) -> None:
    page = visitor.page
    expect(page.get_by_text(EN("signed_out_live"))).to_be_visible()
    assert visitor.never_reloaded(), "the page reloaded instead of hearing it"
    # What it still shows is no longer usable: the account's forms are gone or disabled.
    expect(button(page, "Sign out everywhere")).to_be_hidden()


def other_sessions(page: Any) -> Any:
    return (
        section(page, EN("section_sessions"))
        .get_by_role("listitem")
        .filter(has_not_text=EN("session_current"))
    )


def test_a_session_signed_out_from_another_browser_sees_it_live(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    first, second = browse("desktop"), browse("phone")
    sign_in(first, account.email, account.password)
    sign_in(second, account.email, account.password)
    live(second)
    first.goto("/ui/account")  # now listing both sessions
    sessions = section(first.page, EN("section_sessions")).get_by_role("listitem")
    expect(sessions).to_have_count(2)
    expect(sessions.filter(has_text=EN("session_current"))).to_have_count(1)
    first.check("account-two-sessions")
    button(other_sessions(first.page), "Sign out").click()  # the second browser's session
    expect(first.page.locator("#message")).to_have_text(EN("n_session_ended"))
    expect(section(first.page, EN("section_sessions")).get_by_role("listitem")).to_have_count(1)

    signed_out_live(second)
    second.check("account-signed-out-live")
    second.goto("/ui/account")
    expect_signed_out(second)

    # Signed in again there; `Sign out everywhere` here ends both, and that one hears it too.
    sign_in(second, account.email, account.password)
    live(second)
    live(first)
    button(first.page, "Sign out everywhere").click()
    expect_signed_out(first)
    expect(first.page.locator("#message")).to_have_text(EN("n_signed_out_everywhere"))
    signed_out_live(second)


def test_security_notices_and_other_sessions_ending_appear_live(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    sign_in(visitor, account.email, account.password)
    live(visitor)
    notices = visitor.page.locator("#notices")
    with httpx.Client(base_url=gatehouse.base, timeout=30) as client:
        # A sign-in from a device the account has not seen: `security.notice` (new_device).
        elsewhere = {"User-Agent": "Mozilla/5.0 (X11; Linux ppc64) Unfamiliar/1.0"}
        body = {"email": account.email, "password": account.password}
        signed = client.post("/api/auth/login", json=body, headers=elsewhere)
        assert signed.status_code == 200, signed.text
        expect(notices).to_contain_text(EN("nt_new_device"))
        # That session signs out: the page hears another session end, and stays signed in.
        refresh = signed.json()["data"]["refresh_token"]
        ended = client.post("/api/auth/logout", json={"refresh_token": refresh})
        assert ended.status_code == 200, ended.text
        expect(notices).to_contain_text(EN("rv_other"))
    assert visitor.never_reloaded()
    expect(button(visitor.page, "Sign out everywhere")).to_be_visible()
    visitor.check("account-live-notices")
