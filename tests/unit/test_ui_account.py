"""The account page's changes (profile, phone, password, second factors, deletion) and the
re-authentication a sensitive one asks for; and the messages of every refusal the API can give:
rate limited with when to retry, service unavailable, reauth required."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.ui.outcome import wait_text
from gatehouse.ui.text import Text

from .api_client import PASSWORD
from .helpers import FaultyUow
from .ui_browser import ES, Pages, open_pages

NEW_PASSWORD = "an entirely new passphrase"


@pytest.fixture
async def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pages]:
    async with open_pages(tmp_path, monkeypatch) as opened:
        yield opened


async def test_the_name_changes(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    answer = await browser.post("/ui/account/profile", {"name": "Ada King"})
    assert answer.headers["location"] == "/ui/account?notice=n_saved"
    await browser.get(answer.headers["location"])
    assert browser.page().value("profile-name") == "Ada King"
    assert browser.page().texts["message"] == "Saved."
    empty = await browser.post("/ui/account/profile", {"name": "   "})
    assert empty.status_code == 422
    assert browser.page().texts["error"] == "Give a name of 1 to 200 characters."


async def test_a_new_phone_waits_for_its_code(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    answer = await browser.post("/ui/account/phone", {"phone": "+14155550123"})
    assert answer.headers["location"] == "/ui/account?notice=n_phone_code#phone"
    await browser.get("/ui/account?notice=n_phone_code")
    html = browser.page()
    assert html.labels["phone-code"] == "Code"
    assert html.value("phone-number") == ""  # not the account's until proven
    ctx = pages.services.ctx
    commands = [r for r in await outbox_sms(pages)]
    code = ctx.keyring.decrypt(commands[-1]["code_ciphertext"], f"send-otp:{commands[-1]['id']}")
    done = await browser.post("/ui/account/phone/verify", {"otp": code})
    assert done.headers["location"] == "/ui/account?notice=n_phone_verified"
    await browser.get("/ui/account")
    assert browser.page().value("phone-number") == "+14155550123"
    assert browser.page().by_id("phone-verify-form") is None
    removed = await browser.post("/ui/account/phone", {"phone": ""})
    assert removed.headers["location"] == "/ui/account?notice=n_phone_removed#phone"


async def outbox_sms(pages: Pages) -> list[dict[str, str]]:
    import json

    from gatehouse.domain import events
    from gatehouse.outbox.relay import Relay

    services = pages.services
    relay = Relay(
        services.outbox_store,
        services.publisher,
        batch=500,
        interval=0.01,
        clock=services.ctx.clock,
    )
    await relay.run_once()
    assert services.bus is not None
    found = [json.loads(r.value) for r in services.bus.published if r.topic == events.SEND_OTP]
    return [c for c in found if c["channel"] == "sms"]


async def test_a_password_change_signs_out_everywhere(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    wrong = await browser.post(
        "/ui/account/password", {"current_password": "not it at all", "password": NEW_PASSWORD}
    )
    assert wrong.status_code == 401
    assert browser.page().texts["error"] == "The password is wrong."
    answer = await browser.post(
        "/ui/account/password", {"current_password": PASSWORD, "password": NEW_PASSWORD}
    )
    assert answer.headers["location"] == "/ui/signin?notice=n_password_changed"
    assert (await browser.get("/ui/account")).headers["location"] == "/ui/signin"
    await pages.signed_in("ada@example.com", NEW_PASSWORD)


async def test_deleting_the_account(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    refused = await browser.post("/ui/account/delete", {"password": "wrong password!"})
    assert refused.status_code == 401
    answer = await browser.post("/ui/account/delete", {"password": PASSWORD})
    assert answer.headers["location"] == "/ui/signin?notice=n_deleted"
    await browser.get("/ui/signin?notice=n_deleted")
    assert browser.page().texts["message"] == "Your account was deleted."
    gone = await pages.api().post(
        "/api/auth/login", {"email": "ada@example.com", "password": PASSWORD}
    )
    assert gone.status_code == 401


async def test_a_sensitive_change_asks_to_confirm_first(pages: Pages) -> None:
    browser = await pages.account()
    pages.clock.advance(pages.services.settings.step_up_seconds + 1)
    await browser.get("/ui/account")
    assert "hidden" in (browser.page().by_id("reauth") or {})
    answer = await browser.post("/ui/account/phone", {"phone": "+14155550123"})
    assert answer.status_code == 403
    html = browser.page()
    assert html.texts["error"] == "For your security, confirm it's you first, then try again."
    assert "hidden" not in (html.by_id("reauth") or {})
    assert html.labels["reauth-password"] == "Password"
    wrong = await browser.post("/ui/account/reauth", {"password": "not the password"})
    assert wrong.status_code == 401
    assert "hidden" not in (browser.page().by_id("reauth") or {})
    confirmed = await browser.post("/ui/account/reauth", {"password": PASSWORD})
    assert confirmed.headers["location"] == "/ui/account?notice=n_reauthed"
    await browser.get(confirmed.headers["location"])
    assert browser.page().texts["message"] == "Thanks. You can make the change now."
    again = await browser.post("/ui/account/phone", {"phone": "+14155550123"})
    assert again.status_code == 303
    # The script's passkey button meets the same refusal, as JSON it can act on.
    pages.clock.advance(pages.services.settings.step_up_seconds + 1)
    await browser.get("/ui/account")
    started = await browser.api("/ui/api/passkeys/options")
    assert started.status_code == 403
    assert started.json()["code"] == "reauth_required"


async def test_the_authenticator_app_and_recovery_codes(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    await browser.post("/ui/account/totp", {})
    secret = browser.page().texts["totp-secret"]
    wrong = await browser.post("/ui/account/totp/confirm", {"code": "000000"})
    assert wrong.status_code == 400
    assert browser.page().texts["error"] == "That code is not right."
    await browser.post("/ui/account/totp", {})  # set up again: a new secret
    secret = browser.page().texts["totp-secret"]
    await browser.post("/ui/account/totp/confirm", {"code": pages.totp_code(secret)})
    await browser.get("/ui/account")
    html = browser.page()
    assert html.texts["recovery-left"] == "10 recovery codes left."
    assert html.labels["password-code"] == "Code" and html.labels["delete-code"] == "Code"
    replaced = await browser.post("/ui/account/recovery-codes", {})
    assert len(re.findall(r"<li><code>", replaced.text)) == 10
    removed = await browser.post("/ui/account/totp/remove", {})
    assert removed.headers["location"] == "/ui/account?notice=n_totp_removed"
    await browser.get("/ui/account")
    assert browser.page().by_id("totp-setup-form") is not None


# --- refusals and their messages -------------------------------------------------------------


async def test_rate_limited_says_when_to_try_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_pages(tmp_path, monkeypatch, rate_limits={"login_ip": "2/minute"}) as pages:
        browser = pages.browser()
        await browser.get("/ui/signin")
        fields = {"email": "ada@example.com", "password": "not the password"}
        for _ in range(2):
            assert (await browser.post("/ui/signin", fields)).status_code == 401
        assert browser.page().texts["error"] == "Wrong email or password."
        answer = await browser.post("/ui/signin", fields)
        assert answer.status_code == 429
        wait = int(answer.headers["retry-after"])
        assert 0 < wait <= 60
        assert browser.page().texts["error"] == f"Too many attempts. Try again in {wait} seconds."
        spanish = await browser.post("/ui/signin", fields, **ES)
        assert "Demasiados intentos. Vuelve a intentarlo en" in spanish.text


async def test_a_code_asked_for_too_soon_says_when(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = {"otp_recipient": "1/minute"}
    async with open_pages(tmp_path, monkeypatch, rate_limits=limits) as pages:
        browser = pages.browser()
        await browser.get("/ui/signup")
        fields = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
        await browser.post("/ui/signup", fields)
        await browser.get("/ui/verify")
        answer = await browser.post("/ui/verify/resend", {"email": "ada@example.com"})
        assert answer.status_code == 429
        assert 0 < int(answer.headers["retry-after"]) <= 60
        error = browser.page().texts["error"]
        assert error.startswith("A code was sent recently. You can ask for another in")


def test_waits_read_naturally() -> None:
    t = Text("en")
    assert wait_text(t, 0) == "1 second"  # never "in 0 seconds"
    assert wait_text(t, 59) == "59 seconds"
    assert wait_text(t, 600) == "10 minutes"
    assert wait_text(t, 12 * 3600) == "12 hours"
    assert wait_text(Text("es"), 90) == "90 segundos"


async def test_service_unavailable_says_so(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    services = pages.services
    healthy = services.ctx
    down = FaultyUow(healthy.uow, fail_at="enter", times=1000)
    services.ctx = dataclasses.replace(healthy, uow=down, read_uow=down)
    try:
        page = await browser.get("/ui/account")
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["retry-after"] == "5"
        expected = "The service is unavailable right now. Try again in a moment."
        assert browser.page().texts["error"] == expected
        signin = pages.browser()
        await signin.get("/ui/signin")
        answer = await signin.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
        assert answer.status_code == 503
        assert signin.page().texts["error"] == expected
        token = await browser.client.get("/ui/api/session")
        assert token.status_code == 503
        assert token.json()["message"] == expected
    finally:
        services.ctx = healthy
    assert (await browser.get("/ui/account")).status_code == 200  # the cookie was kept


async def test_recovery_answers_alike_for_every_address(pages: Pages) -> None:
    await pages.api().signed_up()
    texts = []
    for email in ("ada@example.com", "nobody@example.com"):
        browser = pages.browser()
        await browser.get("/ui/recover")
        answer = await browser.post("/ui/recover", {"email": email, "channel": "email"})
        assert answer.status_code == 200
        texts.append(browser.page().texts["message"])
    assert texts[0] == texts[1] == "If an account matches, a reset code has been sent to it."
    browser = pages.browser()
    await browser.get("/ui/recover")
    await browser.post("/ui/recover", {"email": "ada@example.com", "channel": "email"})
    assert browser.page().labels["reset-code"] == "Code"
    code = (await pages.api().sent_codes("ada@example.com"))[-1]
    fields = {"email": "ada@example.com", "phone": "", "otp": code, "new_password": NEW_PASSWORD}
    done = await browser.post("/ui/recover/reset", fields)
    assert done.headers["location"] == "/ui/signin?notice=n_reset"
    await pages.signed_in("ada@example.com", NEW_PASSWORD)
    await browser.get("/ui/recover")
    neither = await browser.post("/ui/recover", {"email": "", "phone": "", "channel": "sms"})
    assert neither.status_code == 422
    assert browser.page().texts["error"] == "Give your email or your phone (one of them)."
