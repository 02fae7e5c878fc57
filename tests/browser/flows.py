"""The steps the journeys share, written against DESIGN 10's labels (English): fields `Name`,
`Email`, `Password`, `Current password`, `New password`, `Phone`, `Code`, `Recovery code`;
buttons `Create account`, `Verify`, `Sign in`, `Sign in with a passkey`, `Add a passkey`,
`Set up authenticator app`, `Sign out`, `Sign out everywhere`, `Delete account`. The pages'
other words come from their own table (`gatehouse.ui.text`), so a test names what a person
reads, in either language."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from playwright.sync_api import expect

from gatehouse.ui.text import Text
from tests.browser.harness import Visitor

EN = Text("en")
ACCOUNT_URL = re.compile(r"/ui/account(\?.*)?$")
SIGNIN_URL = re.compile(r"/ui/signin(\?.*)?$")
VERIFY_URL = re.compile(r"/ui/verify(\?.*)?$")


def field(scope: Any, label: str) -> Any:
    """The field labelled exactly `label` within `scope` (a page, a section, a form)."""
    return scope.get_by_label(label, exact=True)


def button(scope: Any, name: str) -> Any:
    return scope.get_by_role("button", name=name, exact=True)


def section(page: Any, title: str) -> Any:
    """One section of the account page (a region named by its heading)."""
    return page.get_by_role("region", name=title, exact=True)


def form_of(page: Any, inner: Any) -> Any:
    """The form holding `inner` (a field or a button)."""
    return page.locator("form").filter(has=inner)


def submit(page: Any, inner: Any, name: str) -> None:
    """Press the button `name` of the form holding `inner`."""
    button(form_of(page, inner), name).click()


def fill_sign_up(visitor: Visitor, name: str, email: str, password: str) -> None:
    page = visitor.page
    field(page, "Name").fill(name)
    field(page, "Email").fill(email)
    field(page, "Password").fill(password)
    button(page, "Create account").click()


def enter_code(visitor: Visitor, code: str) -> None:
    field(visitor.page, "Code").fill(code)
    button(visitor.page, "Verify").click()


def open_sign_in(visitor: Visitor, return_to: str | None = None) -> None:
    path = "/ui/signin"
    if return_to is not None:
        path += "?return_to=" + quote(return_to, safe="")
    visitor.goto(path)


def fill_sign_in(visitor: Visitor, email: str, password: str) -> None:
    form = form_of(visitor.page, field(visitor.page, "Password"))
    field(form, "Email").fill(email)
    field(form, "Password").fill(password)
    button(form, "Sign in").click()


def sign_in(visitor: Visitor, email: str, password: str) -> None:
    """Email and password on the sign-in page, for an account without a second factor: ends on
    the account page."""
    open_sign_in(visitor)
    fill_sign_in(visitor, email, password)
    expect_account(visitor)


def second_step_code(visitor: Visitor, code: str) -> None:
    """The second step of a sign-in: the authenticator app's code."""
    page = visitor.page
    field(page, "Code").fill(code)
    submit(page, field(page, "Code"), "Verify")


def expect_account(visitor: Visitor) -> None:
    expect(visitor.page).to_have_url(ACCOUNT_URL)
    expect(button(visitor.page, "Sign out everywhere")).to_be_visible()


def header_sign_out(page: Any) -> Any:
    """The page header's `Sign out` (the sessions list has one per session too)."""
    return button(page.get_by_role("banner"), "Sign out")


def expect_signed_out(visitor: Visitor) -> None:
    """The sign-in page is what the visitor sees."""
    expect(visitor.page).to_have_url(SIGNIN_URL)
    expect(button(visitor.page, "Sign in")).to_be_visible()
