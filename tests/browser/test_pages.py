"""Every page in both languages at phone and desktop width (DESIGN 10, issue 14 points 4 and 5):
a screenshot of each under the artefacts, axe-core with no serious or critical violation, the
page's language and labels those of `Accept-Language`, every field with a label, and `/` going
to the sign-in page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from gatehouse.ui.text import Text
from tests.browser.accounts import PASSWORD, create_account, enable_totp, new_email
from tests.browser.flows import ACCOUNT_URL, SIGNIN_URL, VERIFY_URL
from tests.browser.harness import Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def labelled(visitor: Visitor, t: Text, key: str) -> object:
    """The field whose label is `key`'s text in the visitor's language."""
    page = visitor.page
    if key == "email":  # the recover page's channel radio button says `Email` too
        return page.get_by_role("textbox", name=t(key), exact=True)
    return page.get_by_label(t(key), exact=True)


def pressed(visitor: Visitor, t: Text, key: str) -> None:
    visitor.page.get_by_role("button", name=t(key), exact=True).click()


def every_field_has_a_label(visitor: Visitor) -> None:
    """Every field a person can see has a <label> (a hidden `username` beside a password
    field, for password managers, is not one)."""
    unlabelled = visitor.page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.checkVisibility() && e.labels.length === 0)
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == [], f"fields without a <label> on {visitor.page.url}: {unlabelled}"


def in_language(visitor: Visitor, t: Text) -> None:
    lang = visitor.page.locator("html").get_attribute("lang") or ""
    assert lang.split("-")[0] == visitor.lang, f"html lang={lang!r} on {visitor.page.url}"
    if visitor.lang == "es":  # no English label left behind
        for english in ("Create account", "Sign in", "Send code", "Sign out everywhere"):
            expect(visitor.page.get_by_role("button", name=english, exact=True)).to_have_count(0)


def check_page(visitor: Visitor, t: Text, name: str) -> None:
    in_language(visitor, t)
    every_field_has_a_label(visitor)
    visitor.check(name)


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_every_page_in_both_languages_at_both_sizes(
    size: str,
    lang: str,
    browse: Callable[..., Visitor],
    gatehouse: Gatehouse,
    mail: Mailbox,
) -> None:
    t = Text(lang)
    visitor = browse(size, lang)
    page = visitor.page

    visitor.goto("/")
    expect(page).to_have_url(SIGNIN_URL)
    check_page(visitor, t, "signin")

    visitor.goto("/ui/signup")
    check_page(visitor, t, "signup")
    email = new_email("pages")
    labelled(visitor, t, "name").fill("Ada Lovelace")
    labelled(visitor, t, "email").fill(email)
    labelled(visitor, t, "password").fill(PASSWORD)
    pressed(visitor, t, "create_account")
    expect(page).to_have_url(VERIFY_URL)
    check_page(visitor, t, "verify")
    labelled(visitor, t, "code").fill(mail.code(email))
    pressed(visitor, t, "verify")
    expect(page).to_have_url(ACCOUNT_URL)
    check_page(visitor, t, "account")

    visitor.context.clear_cookies()
    visitor.goto("/ui/recover")
    check_page(visitor, t, "recover")
    labelled(visitor, t, "email").fill(email)
    pressed(visitor, t, "send_code")
    expect(labelled(visitor, t, "new_password")).to_be_visible()
    check_page(visitor, t, "recover-reset")

    # The second step of a sign-in, for an account with an authenticator app.
    account = create_account(gatehouse, mail)
    enable_totp(gatehouse, account)
    visitor.context.clear_cookies()
    visitor.goto("/ui/signin")
    labelled(visitor, t, "email").fill(account.email)
    labelled(visitor, t, "password").fill(account.password)
    pressed(visitor, t, "sign_in")
    expect(labelled(visitor, t, "code")).to_be_visible()
    check_page(visitor, t, "signin-second-step")
