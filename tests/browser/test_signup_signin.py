"""Sign-up and sign-in journeys in the browser (DESIGN 10, issue 14 point 1): sign up, the code's
delivery shown live, verify, signed in; sign in with a password, with a password and an
authenticator app's code, with a recovery code, and with a passkey alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import PASSWORD, create_account, enable_totp, new_email
from tests.browser.flows import (
    EN,
    VERIFY_URL,
    button,
    enter_code,
    expect_account,
    expect_signed_out,
    field,
    fill_sign_in,
    fill_sign_up,
    header_sign_out,
    open_sign_in,
    second_step_code,
    section,
    sign_in,
    submit,
)
from tests.browser.harness import Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
SENT_BY_EMAIL = EN("d_sent", channel=EN("ch_email"))
NOT_SENT = EN("d_failed")
# Every text the delivery line shows, in order, kept by the page itself as it changes: what
# the courier did reached the page live (from before the page's own script runs).
RECORD_DELIVERY = """
    window.__deliverySeen = [];
    document.addEventListener('DOMContentLoaded', () => {
        const line = document.getElementById('delivery');
        if (!line) return;
        const note = () => {
            const seen = window.__deliverySeen, text = line.textContent.trim();
            if (seen[seen.length - 1] !== text) seen.push(text);
        };
        note();
        new MutationObserver(note).observe(line, {childList: true, characterData: true,
                                                  subtree: true});
    });
"""


def test_sign_up_shows_the_delivery_live_then_the_code_signs_in(
    browse: Callable[..., Visitor], mail: Mailbox
) -> None:
    visitor = browse("phone")
    page = visitor.page
    page.add_init_script(RECORD_DELIVERY)
    email = new_email("signup")
    visitor.goto("/ui/signup")
    fill_sign_up(visitor, "Grace Hopper", email, PASSWORD)
    expect(page).to_have_url(VERIFY_URL)
    visitor.mark_no_reload()
    delivery = page.locator("#delivery")
    expect(delivery).to_have_text(SENT_BY_EMAIL)  # the courier's progress, as it happens
    assert visitor.never_reloaded()
    seen = page.evaluate("() => window.__deliverySeen")
    assert seen[-1] == SENT_BY_EMAIL and len(seen) >= 2, seen  # it changed in front of us
    print("delivery seen on the verify page:", seen)
    visitor.check("verify-delivered")
    expect(field(page, "Email")).to_have_value(email)
    enter_code(visitor, mail.code(email))
    expect_account(visitor)
    expect(page.locator("#signed-in-as")).to_have_text(EN("signed_in_as", email=email))
    expect(field(section(page, "Profile"), "Name")).to_have_value("Grace Hopper")
    visitor.check("account-new")


def test_a_refused_sign_up_mail_is_shown_failed_live(
    browse: Callable[..., Visitor], mail: Mailbox
) -> None:
    visitor = browse("desktop")
    email = new_email("bounce")
    mail.refused.add(email)  # the SMTP server answers 550: a permanent failure
    visitor.goto("/ui/signup")
    fill_sign_up(visitor, "Bounced Person", email, PASSWORD)
    expect(visitor.page).to_have_url(VERIFY_URL)
    visitor.mark_no_reload()
    expect(visitor.page.locator("#delivery")).to_have_text(NOT_SENT)
    assert visitor.never_reloaded()
    visitor.check("verify-failed")


def test_a_wrong_code_is_refused_with_a_message_then_the_right_one_signs_in(
    browse: Callable[..., Visitor], mail: Mailbox
) -> None:
    visitor = browse("desktop")
    email = new_email("wrongcode")
    visitor.goto("/ui/signup")
    fill_sign_up(visitor, "Ada", email, PASSWORD)
    code = mail.code(email)
    enter_code(visitor, f"{(int(code) + 1) % 1_000_000:06d}")
    expect(visitor.page.get_by_role("alert")).to_have_text(EN("err_wrong_code"))
    visitor.check("verify-wrong-code")
    enter_code(visitor, code)
    expect_account(visitor)


def test_after_five_wrong_codes_even_the_right_one_is_refused(
    browse: Callable[..., Visitor], mail: Mailbox
) -> None:
    """Too many tries (GATEHOUSE_CODE_MAX_ATTEMPTS, 5): the code is dead. The page says what it
    says of any code that cannot be used, "wrong or has expired" (the API answers alike), and
    signs nobody in."""
    visitor = browse("phone")
    page = visitor.page
    email = new_email("deadcode")
    visitor.goto("/ui/signup")
    fill_sign_up(visitor, "Ada", email, PASSWORD)
    expect(page).to_have_url(VERIFY_URL)
    code = mail.code(email)

    def verify_answer(guess: str) -> int:
        with page.expect_response(
            lambda r: r.request.method == "POST" and VERIFY_URL.search(r.url) is not None
        ) as answer:
            enter_code(visitor, guess)
        status: int = answer.value.status
        return status

    for n in range(1, 6):
        assert verify_answer(f"{(int(code) + n) % 1_000_000:06d}") == 400
        expect(page.get_by_role("alert")).to_have_text(EN("err_wrong_code"))
    assert verify_answer(code) == 400  # the right code, after five wrong ones
    expect(page.get_by_role("alert")).to_have_text(EN("err_wrong_code"))
    expect(field(page, "Code")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(VERIFY_URL)
    visitor.check("verify-too-many-tries")
    visitor.goto("/ui/account")
    expect_signed_out(visitor)


def test_sign_in_with_a_password_then_sign_out(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    open_sign_in(visitor)
    fill_sign_in(visitor, account.email, "Not-The-Passw0rd-123")
    expect(visitor.page.get_by_role("alert")).to_have_text(EN("err_credentials"))
    visitor.check("signin-wrong-password")
    fill_sign_in(visitor, account.email, account.password)
    expect_account(visitor)
    header_sign_out(visitor.page).click()
    expect_signed_out(visitor)
    expect(visitor.page.get_by_role("status").first).to_have_text(EN("n_signed_out"))
    visitor.goto("/ui/account")  # the session is over: the account page sends to sign-in
    expect_signed_out(visitor)


def test_sign_in_with_a_password_and_an_authenticator_app_code(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    app, _recovery = enable_totp(gatehouse, account)
    visitor = browse("desktop")
    open_sign_in(visitor)
    fill_sign_in(visitor, account.email, account.password)
    expect(field(visitor.page, "Code")).to_be_visible()
    expect(field(visitor.page, "Recovery code")).to_be_visible()
    visitor.check("signin-second-factor")
    right = app.code()
    second_step_code(visitor, f"{(int(right) + 1) % 1_000_000:06d}")
    expect(visitor.page.get_by_role("alert")).to_have_text(EN("err_wrong_factor"))
    second_step_code(visitor, right)
    expect_account(visitor)


def test_sign_in_with_a_password_and_a_recovery_code(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    _app, recovery = enable_totp(gatehouse, account)
    visitor = browse("desktop")
    open_sign_in(visitor)
    fill_sign_in(visitor, account.email, account.password)
    page = visitor.page
    field(page, "Recovery code").fill(recovery[0])
    submit(page, field(page, "Recovery code"), "Verify")
    expect_account(visitor)
    expect(page.locator("#recovery-left")).to_have_text(EN("recovery_left", count=9))


def test_sign_in_with_a_passkey_alone(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    page = visitor.page
    authenticator = visitor.authenticator()  # this page's own platform authenticator
    sign_in(visitor, account.email, account.password)
    button(page, "Add a passkey").click()  # the browser's prompt at once: no dialog of ours
    expect(page.locator("#message")).to_have_text(EN("n_passkey_added"))
    assert len(authenticator.credentials()) == 1
    header_sign_out(page).click()
    expect_signed_out(visitor)
    button(page, "Sign in with a passkey").click()  # no email, no password
    expect_account(visitor)
    expect(page.locator("#signed-in-as")).to_have_text(EN("signed_in_as", email=account.email))


def test_sign_in_with_a_password_and_a_passkey_as_the_second_step(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    page = visitor.page
    visitor.authenticator()
    sign_in(visitor, account.email, account.password)
    button(page, "Add a passkey").click()
    expect(page.locator("#message")).to_have_text(EN("n_passkey_added"))
    header_sign_out(page).click()
    expect_signed_out(visitor)
    fill_sign_in(visitor, account.email, account.password)  # the passkey is a second factor now
    expect(page.get_by_role("heading", name=EN("title_mfa"))).to_be_visible()
    expect(field(page, "Recovery code")).to_be_visible()
    visitor.check("signin-second-step-passkey")
    button(page, "Sign in with a passkey").click()
    expect_account(visitor)


def test_sign_in_with_the_keyboard_alone(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    page = visitor.page
    open_sign_in(visitor)

    def focused() -> str:
        return str(page.evaluate("() => document.activeElement.outerHTML.split('>')[0]"))

    page.keyboard.press("Tab")
    assert "skip" in focused(), focused()  # the first stop skips to the content
    page.keyboard.press("Enter")
    for _ in range(10):  # on to the first field, whatever else the header holds
        page.keyboard.press("Tab")
        if 'type="email"' in focused():
            break
    assert 'type="email"' in focused(), focused()
    page.keyboard.type(account.email)
    page.keyboard.press("Tab")
    assert 'type="password"' in focused(), focused()
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    expect_account(visitor)
