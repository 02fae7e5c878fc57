"""The pages' journeys at the HTTP level (the browser tests drive the same ones in Chromium): sign
up and verify with the code's delivery followed, sign in with a second factor, recover, and the
account page's changes, each through the flows the API uses."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.domain.deliveries import Status
from gatehouse.selfservice import browser as browser_session
from tests.softauthn import SoftAuthenticator

from .api_client import PASSWORD
from .ui_browser import Browser, Html, Pages, open_pages

NEW_PASSWORD = "an entirely new passphrase"


@pytest.fixture
async def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pages]:
    async with open_pages(tmp_path, monkeypatch) as opened:
        yield opened


async def sign_up(pages: Pages, browser: Browser, email: str = "ada@example.com") -> str:
    """Sign up through the page; the code mailed (read as the courier would)."""
    await browser.get("/ui/signup")
    fields = {"name": "Ada", "email": email, "password": PASSWORD, "phone": ""}
    answer = await browser.post("/ui/signup", fields)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/verify?notice=n_code_sent"
    return (await pages.api().sent_codes(email))[-1]


async def test_sign_up_verify_and_be_signed_in(pages: Pages) -> None:
    browser = pages.browser()
    code = await sign_up(pages, browser)
    page = await browser.get("/ui/verify?notice=n_code_sent")
    html = browser.page()
    assert html.value("verify-email") == "ada@example.com"
    assert html.by_id("delivery") is not None
    assert "a verification code has been sent" in html.texts["message"]
    answer = await browser.post("/ui/verify", {"email": "ada@example.com", "otp": code})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/account"
    assert 'gatehouse_signup=""' in ";".join(answer.headers.get_list("set-cookie"))
    assert page.status_code == 200
    assert (await browser.get("/ui/account")).status_code == 200


async def test_verifying_in_another_browser_asks_to_sign_in(pages: Pages) -> None:
    code = await sign_up(pages, pages.browser())
    other = pages.browser()
    await other.get("/ui/verify")
    assert other.page().value("verify-email") == ""
    assert "hidden" in (other.page().by_id("delivery") or {})  # nothing of its own to follow
    answer = await other.post("/ui/verify", {"email": "ada@example.com", "otp": code})
    assert answer.headers["location"] == "/ui/signin?notice=n_verified"
    assert other.cookie("gatehouse_session") is None


async def test_a_wrong_code_says_so_and_too_many_end_it(pages: Pages) -> None:
    browser = pages.browser()
    code = await sign_up(pages, browser)
    await browser.get("/ui/verify")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answer = await browser.post("/ui/verify", {"email": "ada@example.com", "otp": wrong})
    assert answer.status_code == 400
    html = browser.page()
    assert html.texts["error"].startswith("That code is wrong or has expired.")
    assert (html.by_id("verify-code") or {}).get("aria-invalid") == "true"
    for _ in range(5):
        await browser.post("/ui/verify", {"email": "ada@example.com", "otp": wrong})
    spent = await browser.post("/ui/verify", {"email": "ada@example.com", "otp": code})
    assert spent.status_code == 400  # five wrong tries killed the code: ask for a new one
    spanish = await browser.post(
        "/ui/verify", {"email": "ada@example.com", "otp": code}, **{"accept-language": "es"}
    )
    assert "Ese código no es correcto o ha caducado." in spanish.text


async def test_the_delivery_is_followed_as_it_happens(pages: Pages) -> None:
    browser = pages.browser()
    await sign_up(pages, browser)
    ticket = browser_session.open_ticket(pages.services.ctx, browser.cookie("gatehouse_signup"))
    assert ticket is not None and ticket.message_id is not None
    log, now = pages.services.delivery_log(), pages.clock()

    async def progress() -> dict[str, object]:
        answer = await browser.client.get("/ui/api/delivery")
        assert answer.status_code == 200
        data: dict[str, object] = answer.json()["data"]
        return data

    assert (await progress())["status"] == "queued"
    await log.claim(ticket.message_id, "courier-1", now, now)
    assert (await progress())["status"] == "sending"
    await log.record(ticket.message_id, Status.SENDING, "email", 1, "timeout", None, now)
    assert (await progress())["status"] == "retrying"
    await log.record(ticket.message_id, Status.SENT, "sms", 2, None, None, now)
    done = await progress()
    assert done == {
        "status": "sent",
        "first_channel": "email",
        "channel": "sms",
        "fallback": True,
        "attempts": 2,
        "final": True,
    }
    # Another browser has no ticket: nothing to follow, nobody else's mail to read.
    assert (await pages.browser().client.get("/ui/api/delivery")).status_code == 404


async def test_a_failed_delivery_says_so(pages: Pages) -> None:
    browser = pages.browser()
    await sign_up(pages, browser)
    ticket = browser_session.open_ticket(pages.services.ctx, browser.cookie("gatehouse_signup"))
    assert ticket is not None and ticket.message_id is not None
    log, now = pages.services.delivery_log(), pages.clock()
    await log.record(ticket.message_id, Status.ABANDONED, "email", 5, "refused", None, now)
    data = (await browser.client.get("/ui/api/delivery")).json()["data"]
    assert (data["status"], data["final"]) == ("failed", True)


async def test_no_mail_queued_reads_like_a_prompt_delivery(pages: Pages) -> None:
    """An address whose tries are spent gets no code (as the API answers): the page must not
    tell it apart from another, so it shows what a prompt delivery shows."""
    ctx = pages.services.ctx
    sealed = browser_session.seal_ticket(ctx, "ada@example.com", None)
    browser = pages.browser()
    browser.client.cookies.set("gatehouse_signup", sealed)
    assert (await browser.client.get("/ui/api/delivery")).json()["data"]["status"] == "queued"
    pages.clock.advance(3)
    data = (await browser.client.get("/ui/api/delivery")).json()["data"]
    assert (data["status"], data["channel"], data["fallback"]) == ("sent", "email", False)


async def test_resend_follows_the_new_mail(pages: Pages) -> None:
    browser = pages.browser()
    await sign_up(pages, browser)
    first = browser_session.open_ticket(pages.services.ctx, browser.cookie("gatehouse_signup"))
    pages.clock.advance(61)
    await browser.get("/ui/verify")
    answer = await browser.post("/ui/verify/resend", {"email": "ada@example.com"})
    assert answer.headers["location"] == "/ui/verify?notice=n_resent"
    second = browser_session.open_ticket(pages.services.ctx, browser.cookie("gatehouse_signup"))
    assert first is not None and second is not None
    assert second.message_id not in (None, first.message_id)


async def test_sign_up_refusals_keep_what_was_typed(pages: Pages) -> None:
    browser = pages.browser()
    await browser.get("/ui/signup")
    fields = {"name": "Ada", "email": "ada@example.com", "password": "short", "phone": ""}
    answer = await browser.post("/ui/signup", fields)
    assert answer.status_code == 422
    html = browser.page()
    assert html.texts["error"] == "The password must have at least 8 characters."
    assert html.value("signup-email") == "ada@example.com"
    assert "value" not in (html.by_id("signup-password") or {})  # never sent back
    common = await browser.post("/ui/signup", {**fields, "password": "password123"})
    assert "one of the most common" in common.text
    phone = await browser.post("/ui/signup", {**fields, "password": PASSWORD, "phone": "12"})
    assert "international format" in browser.page().texts["error"]
    assert phone.status_code == 422


# --- sign-in with a second factor ----------------------------------------------------------


async def set_up_totp(pages: Pages, browser: Browser) -> tuple[str, list[str]]:
    await browser.get("/ui/account")
    shown = await browser.post("/ui/account/totp", {})
    assert shown.status_code == 200, shown.text
    html = browser.page()
    qr = html.by_id("totp-qr")
    assert qr is not None and qr["src"].startswith("data:image/svg+xml;base64,")
    secret = html.texts["totp-secret"]
    confirmed = await browser.post("/ui/account/totp/confirm", {"code": pages.totp_code(secret)})
    assert confirmed.status_code == 200
    codes = re.findall(r"<li><code>([^<]+)</code></li>", confirmed.text)
    assert len(codes) == 10
    assert browser.page().texts["message"] == "Authenticator app set up."
    return secret, codes


async def test_sign_in_with_a_password_and_an_authenticator_code(pages: Pages) -> None:
    first = await pages.account()
    secret, _codes = await set_up_totp(pages, first)
    pages.clock.advance(30)  # the confirming code's step is spent
    browser = pages.browser()
    await browser.get("/ui/signin")
    step = await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    assert step.status_code == 200
    html = browser.page()
    assert html.texts["main"].startswith("Second step")
    assert browser.cookie("gatehouse_session") is None
    wrong = await browser.post("/ui/signin/mfa", mfa_fields(html, code="000000"))
    assert wrong.status_code == 400
    assert browser.page().texts["error"] == "That code is not right."
    done = await browser.post("/ui/signin/mfa", mfa_fields(html, code=pages.totp_code(secret)))
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/account"
    assert (await browser.get("/ui/account")).status_code == 200


def mfa_fields(html: Html, **factor: str) -> dict[str, str]:
    token = [a["value"] for t, a in html.elements if t == "input" and a["name"] == "mfa_token"]
    methods = [a["value"] for t, a in html.elements if t == "input" and a["name"] == "methods"]
    return {"mfa_token": token[0], "methods": methods[0], **factor}


async def test_sign_in_with_a_recovery_code(pages: Pages) -> None:
    first = await pages.account()
    _secret, codes = await set_up_totp(pages, first)
    browser = pages.browser()
    await browser.get("/ui/signin")
    await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    html = browser.page()
    assert html.labels["mfa-recovery-code"] == "Recovery code"
    done = await browser.post("/ui/signin/mfa", mfa_fields(html, recovery_code=codes[0]))
    assert done.headers["location"] == "/ui/account"


async def test_an_expired_second_step_starts_again(pages: Pages) -> None:
    first = await pages.account()
    secret, _codes = await set_up_totp(pages, first)
    browser = pages.browser()
    await browser.get("/ui/signin")
    await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    html = browser.page()
    pages.clock.advance(301)
    late = await browser.post("/ui/signin/mfa", mfa_fields(html, code=pages.totp_code(secret)))
    assert late.status_code == 401
    assert browser.page().texts["error"].startswith("This sign-in expired or had too many tries")
    assert browser.page().by_id("signin-form") is not None


async def test_sign_in_with_a_passkey_alone(pages: Pages) -> None:
    first = await pages.account()
    await first.get("/ui/account")
    device = SoftAuthenticator()
    started = (await first.api("/ui/api/passkeys/options")).json()["data"]
    added = await first.api(
        "/ui/api/passkeys",
        {"flow_id": started["flow_id"], "credential": device.create(started["options"])},
    )
    assert added.status_code == 201, added.text
    passkey = added.json()["data"]["passkey"]
    assert passkey["name"] == "Passkey" and len(added.json()["data"]["recovery_codes"]) == 10
    # Named afterwards, on the page.
    await first.get("/ui/account")
    renamed = await first.post(f"/ui/account/passkeys/{passkey['id']}/rename", {"name": "Laptop"})
    assert renamed.headers["location"] == "/ui/account?notice=n_passkey_renamed"
    await first.get("/ui/account")
    assert first.page().value(f"passkey-name-{passkey['id']}") == "Laptop"
    # Passwordless, in another browser.
    browser = pages.browser()
    await browser.get("/ui/signin")
    options = (await browser.api("/ui/api/passkeys/signin/options")).json()["data"]
    signed = await browser.api(
        "/ui/api/passkeys/signin",
        {
            "flow_id": options["flow_id"],
            "credential": device.get(options["options"]),
            "return_to": "https://elsewhere.example/",
        },
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["data"] == {"redirect": "/ui/account"}
    assert (await browser.get("/ui/account")).status_code == 200
    # A refused assertion says so in the page's language.
    options = (await browser.api("/ui/api/passkeys/signin/options")).json()["data"]
    replayed = await browser.api(
        "/ui/api/passkeys/signin",
        {"flow_id": options["flow_id"], "credential": device.get(options["options"], sign_count=0)},
    )
    assert replayed.status_code == 401
    assert replayed.json()["message"] == "The passkey was not accepted. Try again."
