"""The account page in the browser (DESIGN 10, issue 14 point 1): profile name, phone with its
verification (the code read at the stand-in for Twilio), password change, passkeys added
(Chromium's virtual authenticator), renamed and removed, the authenticator app set up from its
QR code's key (codes from pyotp) and removed, recovery codes, and the account deleted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import (
    NEW_PASSWORD,
    AuthenticatorApp,
    create_account,
    new_phone,
)
from tests.browser.flows import (
    EN,
    button,
    expect_account,
    expect_signed_out,
    field,
    fill_sign_in,
    open_sign_in,
    second_step_code,
    section,
    sign_in,
)
from tests.browser.harness import FakeTwilio, Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def notice(visitor: Visitor) -> object:
    return visitor.page.locator("#message")


def test_profile_name_and_phone_with_its_verification(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox, twilio: FakeTwilio
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    page = visitor.page
    sign_in(visitor, account.email, account.password)

    profile = section(page, "Profile")
    field(profile, "Name").fill("Augusta Ada King")
    button(profile, "Save").click()
    expect(notice(visitor)).to_have_text(EN("n_saved"))
    visitor.goto("/ui/account")
    expect(field(section(page, "Profile"), "Name")).to_have_value("Augusta Ada King")

    phone = new_phone()
    before = twilio.count(phone)
    field(section(page, "Phone"), "Phone").fill(phone)
    button(section(page, "Phone"), "Save phone").click()
    expect(notice(visitor)).to_have_text(EN("n_phone_code"))
    phone_section = section(page, "Phone")
    expect(phone_section.get_by_text(EN("phone_pending"))).to_be_visible()
    visitor.check("account-phone-pending")
    field(phone_section, "Code").fill(twilio.code(phone, before))
    button(phone_section, "Verify").click()
    expect(notice(visitor)).to_have_text(EN("n_phone_verified"))
    expect(field(section(page, "Phone"), "Phone")).to_have_value(phone)

    field(section(page, "Phone"), "Phone").fill("")
    button(section(page, "Phone"), "Save phone").click()
    expect(notice(visitor)).to_have_text(EN("n_phone_removed"))
    expect(field(section(page, "Phone"), "Phone")).to_have_value("")


def test_password_change_signs_out_then_the_new_password_signs_in(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    page = visitor.page
    sign_in(visitor, account.email, account.password)
    password = section(page, "Password")
    field(password, "Current password").fill("Not-The-Passw0rd-123")
    field(password, "New password").fill(NEW_PASSWORD)
    button(password, EN("change_password")).click()
    expect(page.get_by_role("alert").first).to_have_text(EN("err_password_wrong"))
    visitor.check("account-password-wrong")
    password = section(page, "Password")
    field(password, "Current password").fill(account.password)
    field(password, "New password").fill(NEW_PASSWORD)
    button(password, EN("change_password")).click()
    expect_signed_out(visitor)
    expect(notice(visitor)).to_have_text(EN("n_password_changed"))
    fill_sign_in(visitor, account.email, account.password)
    expect(page.get_by_role("alert")).to_have_text(EN("err_credentials"))
    fill_sign_in(visitor, account.email, NEW_PASSWORD)
    expect_account(visitor)


def test_passkeys_add_rename_remove(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    page = visitor.page
    authenticator = visitor.authenticator()
    sign_in(visitor, account.email, account.password)
    passkeys = section(page, "Passkeys")
    expect(passkeys.get_by_text(EN("no_passkeys"))).to_be_visible()
    button(passkeys, "Add a passkey").click()
    expect(page.locator("#message")).to_have_text(EN("n_passkey_added"))
    assert len(authenticator.credentials()) == 1
    item = passkeys.get_by_role("listitem")
    expect(item).to_have_count(1)
    # The first second factor brings ten recovery codes, shown this once.
    codes = section(page, "Recovery codes").locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    visitor.check("account-passkey-added")

    field(item, EN("passkey_name")).fill("Work laptop")
    button(item, EN("rename")).click()
    expect(notice(visitor)).to_have_text(EN("n_passkey_renamed"))
    expect(field(section(page, "Passkeys"), EN("passkey_name"))).to_have_value("Work laptop")

    button(section(page, "Passkeys").get_by_role("listitem"), EN("remove")).click()
    expect(notice(visitor)).to_have_text(EN("n_passkey_removed"))
    expect(section(page, "Passkeys").get_by_role("listitem")).to_have_count(0)
    expect(section(page, "Passkeys").get_by_text(EN("no_passkeys"))).to_be_visible()
    # Removed from the account: the authenticator's copy signs in no more.
    visitor.context.clear_cookies()
    open_sign_in(visitor)
    button(page, "Sign in with a passkey").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page).not_to_have_url(f"{gatehouse.base}/ui/account")


def test_authenticator_app_from_its_qr_key_with_recovery_codes(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("desktop")
    page = visitor.page
    sign_in(visitor, account.email, account.password)
    totp = section(page, EN("section_totp"))
    expect(totp.get_by_text(EN("totp_none"))).to_be_visible()
    button(totp, "Set up authenticator app").click()

    totp = section(page, EN("section_totp"))
    qr = totp.get_by_role("img", name=EN("totp_qr_alt"))
    expect(qr).to_be_visible()
    # The QR code is an SVG made by the server, shown under the page's CSP.
    assert qr.evaluate("(img) => img.complete && img.naturalWidth > 0")
    assert (qr.get_attribute("src") or "").startswith(("data:image/svg+xml", "/"))
    app = AuthenticatorApp(totp.locator("#totp-secret").inner_text().strip())
    visitor.check("account-totp-setup")
    field(totp, "Code").fill(app.code())
    button(totp, "Verify").click()
    expect(notice(visitor)).to_have_text(EN("n_totp_on"))
    expect(section(page, EN("section_totp")).get_by_text(EN("totp_on"))).to_be_visible()

    recovery = section(page, "Recovery codes")
    first = recovery.locator("#recovery-codes li").all_inner_texts()
    assert len(first) == 10 and len(set(first)) == 10, first
    expect(recovery.locator("#recovery-left")).to_have_text(EN("recovery_left", count=10))
    visitor.check("account-totp-on")
    button(recovery, EN("new_recovery_codes")).click()
    recovery = section(page, "Recovery codes")
    expect(recovery.locator("#recovery-codes li")).to_have_count(10)
    second = recovery.locator("#recovery-codes li").all_inner_texts()
    assert not set(first) & set(second), (first, second)

    # The app's codes sign in now.
    visitor.context.clear_cookies()
    open_sign_in(visitor)
    fill_sign_in(visitor, account.email, account.password)
    second_step_code(visitor, app.code())
    expect_account(visitor)

    button(section(page, EN("section_totp")), EN("totp_remove")).click()
    expect(notice(visitor)).to_have_text(EN("n_totp_removed"))
    expect(section(page, EN("section_totp")).get_by_text(EN("totp_none"))).to_be_visible()


def test_delete_account_with_its_password(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    visitor = browse("phone")
    page = visitor.page
    sign_in(visitor, account.email, account.password)
    delete = section(page, EN("section_delete"))
    field(delete, "Password").fill("Not-The-Passw0rd-123")
    button(delete, "Delete account").click()
    expect(page.get_by_role("alert").first).to_have_text(EN("err_password_wrong"))
    delete = section(page, EN("section_delete"))
    field(delete, "Password").fill(account.password)
    button(delete, "Delete account").click()
    expect_signed_out(visitor)
    expect(notice(visitor)).to_have_text(EN("n_deleted"))
    fill_sign_in(visitor, account.email, account.password)
    expect(page.get_by_role("alert")).to_have_text(EN("err_credentials"))
