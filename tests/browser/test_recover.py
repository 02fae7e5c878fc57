"""Password recovery in the browser (DESIGN 10, issue 14 point 1): by email, by SMS and by
WhatsApp (through the stand-in for Twilio), by phone number instead of email, and an SMS that
Twilio refuses falling back to email; then the new password signs in."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import NEW_PASSWORD, add_phone, create_account
from tests.browser.flows import EN, button, expect_signed_out, field, sign_in
from tests.browser.harness import FakeTwilio, Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def ask_for_code(
    visitor: Visitor, channel: str, email: str | None = None, phone: str | None = None
) -> None:
    """The recover page's first step: the address (or the phone), the channel, send."""
    page = visitor.page
    visitor.goto("/ui/recover")
    if email is not None:
        field(page, "Email").fill(email)
    if phone is not None:
        field(page, "Phone").fill(phone)
    field(page, EN("channel")).select_option(channel)
    button(page, "Send code").click()
    expect(field(page, "New password")).to_be_visible()
    expect(page.get_by_role("status").first).to_have_text(EN("n_reset_sent"))


def reset_with(visitor: Visitor, code: str) -> None:
    page = visitor.page
    field(page, "Code").fill(code)
    field(page, "New password").fill(NEW_PASSWORD)
    button(page, "Reset password").click()
    expect_signed_out(visitor)
    expect(page.get_by_role("status").first).to_have_text(EN("n_reset"))


def test_recover_by_email(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    before = mail.count(account.email)
    ask_for_code(visitor, "email", email=account.email)
    code = mail.code(account.email, before)
    field(visitor.page, "Code").fill(f"{(int(code) + 1) % 1_000_000:06d}")
    field(visitor.page, "New password").fill(NEW_PASSWORD)
    button(visitor.page, "Reset password").click()
    expect(visitor.page.get_by_role("alert")).to_have_text(EN("err_wrong_code"))
    visitor.check("recover-wrong-code")
    reset_with(visitor, code)
    sign_in(visitor, account.email, NEW_PASSWORD)


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_recover_by_phone(
    channel: str,
    browse: Callable[..., Visitor],
    gatehouse: Gatehouse,
    mail: Mailbox,
    twilio: FakeTwilio,
) -> None:
    account = create_account(gatehouse, mail)
    phone = add_phone(gatehouse, twilio, account)
    visitor = browse("desktop")
    before = twilio.count(phone)
    # By the phone number alone for SMS, by the email for WhatsApp: both identify the account.
    if channel == "sms":
        ask_for_code(visitor, channel, phone=phone)
    else:
        ask_for_code(visitor, channel, email=account.email)
    code = twilio.code(phone, before)
    assert twilio.to(phone)[before].to.startswith("whatsapp:") == (channel == "whatsapp")
    reset_with(visitor, code)
    sign_in(visitor, account.email, NEW_PASSWORD)


def test_a_refused_sms_falls_back_to_email(
    browse: Callable[..., Visitor],
    gatehouse: Gatehouse,
    mail: Mailbox,
    twilio: FakeTwilio,
) -> None:
    account = create_account(gatehouse, mail)
    phone = add_phone(gatehouse, twilio, account)
    twilio.refused.add(phone)  # Twilio answers 400 (21211): a permanent failure
    visitor = browse("desktop")
    before = mail.count(account.email)
    ask_for_code(visitor, "sms", email=account.email)
    # SMS refused, then WhatsApp (the same number) refused, then the email goes.
    code = mail.code(account.email, before)
    assert twilio.count(phone) == 1  # only the confirmation of the number ever got through
    reset_with(visitor, code)
    sign_in(visitor, account.email, NEW_PASSWORD)
