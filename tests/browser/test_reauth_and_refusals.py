"""What a page asks or says when a change or a sign-in cannot go ahead as it is (DESIGN 10, issue
14 points 1 and 4), against a `gatehouse serve` of this module's own that makes it quick to reach:

- **Confirm it's you**: a sensitive change (the phone, new recovery codes, adding a passkey) from
  a sign-in older than `GATEHOUSE_STEP_UP_SECONDS` (3 s here) is refused with the `#reauth`
  section; the password (and, with a second factor, the authenticator app's code) or a passkey
  (Chromium's virtual authenticator) confirms it, and the same change then goes through.
- **Rate limited, with when to retry**: `login_account` at 3 a minute (counted per email, so
  only the account of that test ever meets it, whatever the other tests sign in); the fourth
  sign-in is 429 and the page says how long to wait, the number `Retry-After` gives, in English
  and Spanish.
- **Service unavailable**: the server's Redis is a `redis-server` of this module's own; stopped
  (by its PID), a sign-in answers 503 with `Retry-After: 5` and the page's message, not a stack
  trace; started again, the same sign-in goes through. Last in the module, and Redis is started
  again whatever happens.

This server's mail and SMS go through the embedded bus (no Kafka): on the shared `send-otp` topic
the package's server's courier would read its commands too, fail to open them (another keyring)
and dead-letter them. The package's server covers the Kafka path.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from gatehouse.ui.text import Text
from tests.browser.accounts import create_account, enable_totp, new_phone
from tests.browser.flows import (
    EN,
    button,
    expect_account,
    expect_signed_out,
    field,
    fill_sign_in,
    open_sign_in,
    section,
    sign_in,
    submit,
)
from tests.browser.harness import (
    App,
    FakeTwilio,
    Gatehouse,
    Mailbox,
    ThrowawayRedis,
    Visitor,
    serve_gatehouse,
    visitors,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

STEP_UP_SECONDS = 3
SIGN_INS_PER_MINUTE = 3  # `login_account`: per email
ES = Text("es")
REAUTH = EN("section_reauth")
WRONG_PASSWORD = "Not-The-Passw0rd-123"
SIGNIN_POST = re.compile(r"/ui/signin$")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path_factory.mktemp("throwaway-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def strict(
    own_redis: ThrowawayRedis,
    mail: Mailbox,
    twilio: FakeTwilio,
    app: App,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gatehouse]:
    """`gatehouse serve` as the package's, but with a 3 s step-up window, one tight limit
    (`login_account`, every other limit off), the throwaway Redis and the embedded bus."""
    with serve_gatehouse(
        redis_db=contextlib.nullcontext(own_redis.url),
        kafka_bootstrap="",  # the embedded bus: see the module's docstring
        mail=mail,
        twilio=twilio,
        app=app,
        tmp=tmp_path_factory.mktemp("gatehouse-strict"),
        log_name="serve-strict.log",
        settings={
            "GATEHOUSE_STEP_UP_SECONDS": str(STEP_UP_SECONDS),
            "GATEHOUSE_RATE_LIMITS": json.dumps({"login_account": f"{SIGN_INS_PER_MINUTE}/minute"}),
        },
    ) as served:
        yield served


@pytest.fixture
def browse(
    browser: Any, strict: Gatehouse, axe_script: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Visitor]]:
    """The package's `browse`, on this module's server."""
    with visitors(browser, strict.base, axe_script, request) as open_visitor:
        yield open_visitor


def outlive_step_up(signed_in_by: float) -> None:
    """Wait until a sign-in finished by `signed_in_by` (time.time()) is too old for a sensitive
    change: its `auth_time` (whole seconds, at most that) is more than the window ago."""
    time.sleep(max(0.0, math.floor(signed_in_by) + STEP_UP_SECONDS + 0.2 - time.time()))


def message(visitor: Visitor) -> Any:
    return visitor.page.locator("#message")


def error(visitor: Visitor) -> Any:
    return visitor.page.locator("#error")


def expect_reauth_asked(visitor: Visitor) -> Any:
    """The `Confirm it's you` section, shown with the reason and its password field focused."""
    reauth = section(visitor.page, REAUTH)
    expect(reauth).to_be_visible()
    expect(error(visitor)).to_have_text(EN("err_reauth"))
    expect(field(reauth, "Password")).to_be_focused()
    return reauth


def test_a_phone_change_after_the_window_asks_for_the_password_then_goes_through(
    browse: Callable[..., Visitor], strict: Gatehouse, mail: Mailbox, twilio: FakeTwilio
) -> None:
    account = create_account(strict, mail)
    visitor = browse("phone")
    page = visitor.page
    sign_in(visitor, account.email, account.password)
    signed_in_by = time.time()
    expect(section(page, REAUTH)).to_be_hidden()  # nothing to confirm on a page view
    outlive_step_up(signed_in_by)

    phone = new_phone()
    before = twilio.count(phone)
    field(section(page, "Phone"), "Phone").fill(phone)
    with page.expect_response(re.compile(r"/ui/account/phone$")) as answer:
        button(section(page, "Phone"), "Save phone").click()
    assert answer.value.status == 403
    reauth = expect_reauth_asked(visitor)
    expect(field(reauth, "Code")).to_have_count(0)  # no second factor: the password alone
    expect(button(reauth, EN("confirm_passkey"))).to_have_count(0)  # and no passkey
    visitor.check("account-reauth")
    assert twilio.count(phone) == before  # nothing was sent to the new number

    field(reauth, "Password").fill(WRONG_PASSWORD)
    button(reauth, EN("confirm")).click()
    expect(error(visitor)).to_have_text(EN("err_password_wrong"))
    reauth = section(page, REAUTH)  # still asked, the password marked
    expect(field(reauth, "Password")).to_have_attribute("aria-invalid", "true")
    visitor.shoot("account-reauth-wrong-password")

    field(reauth, "Password").fill(account.password)
    button(reauth, EN("confirm")).click()
    expect(message(visitor)).to_have_text(EN("n_reauthed"))
    expect(section(page, REAUTH)).to_be_hidden()
    field(section(page, "Phone"), "Phone").fill(phone)
    button(section(page, "Phone"), "Save phone").click()
    expect(message(visitor)).to_have_text(EN("n_phone_code"))
    phone_section = section(page, "Phone")
    field(phone_section, "Code").fill(twilio.code(phone, before))
    button(phone_section, "Verify").click()
    expect(message(visitor)).to_have_text(EN("n_phone_verified"))
    expect(field(section(page, "Phone"), "Phone")).to_have_value(phone)


def test_with_a_second_factor_the_confirmation_needs_its_code_too(
    browse: Callable[..., Visitor], strict: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(strict, mail)
    app, recovery = enable_totp(strict, account)
    visitor = browse("desktop")
    page = visitor.page
    open_sign_in(visitor)
    fill_sign_in(visitor, account.email, account.password)
    # A recovery code for the second step: the app's next codes are kept for the confirmation.
    field(page, "Recovery code").fill(recovery[0])
    submit(page, field(page, "Recovery code"), "Verify")
    expect_account(visitor)
    outlive_step_up(time.time())

    button(section(page, "Recovery codes"), EN("new_recovery_codes")).click()
    reauth = expect_reauth_asked(visitor)
    expect(field(reauth, "Code")).to_be_visible()
    visitor.check("account-reauth-second-factor")

    field(reauth, "Password").fill(account.password)  # the password alone is not enough
    button(reauth, EN("confirm")).click()
    expect(error(visitor)).to_have_text(EN("err_factor_required"))
    reauth = section(page, REAUTH)
    expect(field(reauth, "Code")).to_have_attribute("aria-invalid", "true")

    field(reauth, "Password").fill(account.password)
    field(reauth, "Code").fill(app.code())
    button(reauth, EN("confirm")).click()
    expect(message(visitor)).to_have_text(EN("n_reauthed"))
    button(section(page, "Recovery codes"), EN("new_recovery_codes")).click()
    codes = section(page, "Recovery codes").locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    fresh = codes.all_inner_texts()
    assert not set(fresh) & set(recovery), (fresh, recovery)


def test_adding_a_passkey_after_the_window_is_confirmed_with_a_passkey(
    browse: Callable[..., Visitor], strict: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(strict, mail)
    visitor = browse("desktop")
    page = visitor.page
    first_device = visitor.authenticator()
    sign_in(visitor, account.email, account.password)
    signed_in_by = time.time()
    button(page, "Add a passkey").click()  # within the window: no confirmation
    expect(message(visitor)).to_have_text(EN("n_passkey_added"))
    outlive_step_up(signed_in_by)

    visitor.goto("/ui/account")  # back later: the page knows the account has a passkey
    with page.expect_response(re.compile(r"/ui/api/passkeys/options$")) as answer:
        button(page, "Add a passkey").click()
    assert answer.value.status == 403
    reauth = expect_reauth_asked(visitor)
    expect(button(reauth, EN("confirm_passkey"))).to_be_visible()
    assert len(first_device.credentials()) == 1  # no prompt was opened
    visitor.check("account-reauth-passkey")

    button(reauth, EN("confirm_passkey")).click()
    expect(message(visitor)).to_have_text(EN("n_reauthed"))
    expect(section(page, REAUTH)).to_be_hidden()
    # A second authenticator (the first holds this account's passkey: it would refuse to make
    # another, as the options exclude it).
    first_device.remove()
    second_device = visitor.authenticator()
    button(page, "Add a passkey").click()
    expect(message(visitor)).to_have_text(EN("n_passkey_added"))
    expect(section(page, "Passkeys").get_by_role("listitem")).to_have_count(2)
    assert len(second_device.credentials()) == 1


def posted_sign_in(response: Any) -> bool:
    return bool(response.request.method == "POST" and SIGNIN_POST.search(response.url))


def rate_limited(visitor: Visitor, t: Text, pattern: str) -> int:
    """`Sign in` answered 429: its `Retry-After`, which the page's message says too."""
    page = visitor.page
    with page.expect_response(posted_sign_in) as answer:
        button(page.locator("#signin-form"), t("sign_in")).click()
    response = answer.value
    assert response.status == 429, response.status
    wait = int(response.headers["retry-after"])
    assert 0 < wait <= 60, wait
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(re.compile(pattern))
    shown = re.fullmatch(pattern, alert.inner_text().strip())
    assert shown is not None and abs(int(shown.group(1)) - wait) <= 1, (shown, wait)
    return wait


def test_too_many_sign_ins_say_when_to_try_again(
    browse: Callable[..., Visitor], strict: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(strict, mail)
    visitor = browse("desktop")
    page = visitor.page
    open_sign_in(visitor)
    for _ in range(SIGN_INS_PER_MINUTE):
        fill_sign_in(visitor, account.email, WRONG_PASSWORD)
        expect(page.get_by_role("alert")).to_have_text(EN("err_credentials"))
    form = page.locator("#signin-form")
    field(form, "Email").fill(account.email)
    field(form, "Password").fill(account.password)  # the right one: too many tries all the same
    rate_limited(visitor, EN, r"Too many attempts\. Try again in (\d+) seconds\.")
    expect(field(form, "Email")).to_have_value(account.email)  # what was typed stays
    visitor.check("signin-rate-limited")
    visitor.goto("/ui/account")
    expect_signed_out(visitor)

    spanish = browse("phone", "es")
    spanish.goto("/ui/signin")
    form = spanish.page.locator("#signin-form")
    field(form, ES("email")).fill(account.email)
    field(form, ES("password")).fill(account.password)
    rate_limited(spanish, ES, r"Demasiados intentos\. Vuelve a intentarlo en (\d+) segundos\.")
    spanish.check("signin-rate-limited")


def test_a_sign_in_without_redis_says_the_service_is_unavailable(
    browse: Callable[..., Visitor], strict: Gatehouse, mail: Mailbox, own_redis: ThrowawayRedis
) -> None:
    account = create_account(strict, mail)
    visitor = browse("desktop")
    page = visitor.page
    open_sign_in(visitor)
    own_redis.stop()
    try:
        with page.expect_response(posted_sign_in) as answer:
            fill_sign_in(visitor, account.email, account.password)
        response = answer.value
        assert response.status == 503, response.status
        assert response.headers.get("retry-after") == "5"
        expect(page.get_by_role("alert")).to_have_text(EN("err_unavailable"))
        expect(field(page, "Email")).to_have_value(account.email)
        shown = page.locator("body").inner_text().lower()
        for leak in ("traceback", "internal server error", "exception", "redis"):
            assert leak not in shown, (leak, shown)
        visitor.check("signin-unavailable")

        spanish = browse("phone", "es")
        spanish.goto("/ui/signin")
        form = spanish.page.locator("#signin-form")
        field(form, ES("email")).fill(account.email)
        field(form, ES("password")).fill(account.password)
        button(form, ES("sign_in")).click()
        expect(spanish.page.get_by_role("alert")).to_have_text(ES("err_unavailable"))
        spanish.shoot("signin-unavailable")
    finally:
        own_redis.start()
    # Redis is back: "try again in a moment" was true.
    fill_sign_in(visitor, account.email, account.password)
    expect_account(visitor)
