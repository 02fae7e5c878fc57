"""The pages' browser session (DESIGN 10): an HttpOnly SameSite=Lax cookie bound to a Gatehouse
session, so that whatever ends the session ends the cookie's at once; CSRF tokens on every state
change (a cross-site post is refused with 403); `return_to` only to allow-listed origins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from gatehouse.config import Settings
from gatehouse.ui import returns

from .api_client import PASSWORD
from .ui_browser import ORIGIN, Browser, Pages, open_pages

APP = "https://app.example.com"


@pytest.fixture
async def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pages]:
    async with open_pages(tmp_path, monkeypatch, ui_return_to=[APP + "/"]) as opened:
        yield opened


def set_cookie_of(browser: Browser, name: str) -> str:
    assert browser.last is not None
    found = [h for h in browser.last.headers.get_list("set-cookie") if h.startswith(name + "=")]
    assert found, f"no {name} cookie set"
    return found[-1]


async def test_signing_in_sets_a_session_cookie_and_opens_the_account(pages: Pages) -> None:
    await pages.api().signed_up()
    browser = pages.browser()
    await browser.get("/ui/signin")
    assert "HttpOnly" in set_cookie_of(browser, "gatehouse_browser")
    answer = await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/account"
    cookie = set_cookie_of(browser, "gatehouse_session")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # the public URL is http here
    account = await browser.get("/ui/account")
    assert account.status_code == 200
    assert browser.page().texts["signed-in-as"] == "Signed in as ada@example.com"
    # Signed in, the sign-in page sends the browser on.
    again = await browser.get("/ui/signin")
    assert (again.status_code, again.headers["location"]) == (303, "/ui/account")


async def test_on_https_the_cookies_are_secure_and_host_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = "https://auth.example.com"
    async with open_pages(tmp_path, monkeypatch, base_url=public, public_url=public) as pages:
        await pages.api().signed_up()
        browser = pages.browser()
        await browser.get("/ui/signin")
        await browser.post(
            "/ui/signin", {"email": "ada@example.com", "password": PASSWORD}, origin=public
        )
        flags = [
            p.strip().lower() for p in set_cookie_of(browser, "__Host-gatehouse_session").split(";")
        ]
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(flags)
        assert not [f for f in flags if f.startswith("domain")]
        assert (await browser.get("/ui/account")).status_code == 200


async def test_a_forged_or_unknown_cookie_is_no_session(pages: Pages) -> None:
    browser = await pages.account()
    value = browser.cookie("gatehouse_session")
    assert value is not None
    session_id, _, mac = value.rpartition(".")
    for forged in (f"{session_id}.{'0' * len(mac)}", "nonsense", f"other-session.{mac}"):
        stranger = pages.browser()
        stranger.client.cookies.set("gatehouse_session", forged)
        answer = await stranger.get("/ui/account")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/signin"
        assert 'gatehouse_session=""' in answer.headers["set-cookie"]  # cleared


async def test_signing_out_ends_the_session_for_good(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    cookie = browser.cookie("gatehouse_session")
    answer = await browser.post("/ui/signout", {})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/signin?notice=n_signed_out"
    # The same cookie value, replayed, names a revoked session.
    replay = pages.browser()
    replay.client.cookies.set("gatehouse_session", str(cookie))
    assert (await replay.get("/ui/account")).headers["location"] == "/ui/signin"
    signin = await browser.get("/ui/signin?notice=n_signed_out")
    assert browser.page().texts["message"] == "You are signed out."
    assert signin.status_code == 200


async def test_revocation_elsewhere_ends_the_cookie_session(pages: Pages) -> None:
    browser = await pages.account()
    api = pages.api()
    other = await api.logged_in()
    bearer = {"authorization": f"Bearer {other['token']}"}
    listed = (await api.client.get("/api/auth/sessions", headers=bearer)).json()["data"]
    [theirs] = [s for s in listed["sessions"] if not s["current"]]
    assert (
        await api.client.delete(f"/api/auth/sessions/{theirs['id']}", headers=bearer)
    ).is_success
    answer = await browser.get("/ui/account")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/signin"


async def test_a_password_change_elsewhere_ends_the_cookie_session(pages: Pages) -> None:
    browser = await pages.account()
    api = pages.api()
    other = await api.logged_in()
    changed = await api.client.patch(
        "/api/auth/profile",
        json={"password": "a brand new passphrase", "current_password": PASSWORD},
        headers={"authorization": f"Bearer {other['token']}"},
    )
    assert changed.status_code == 200, changed.text
    assert (await browser.get("/ui/account")).headers["location"] == "/ui/signin"


async def test_signing_out_everywhere_ends_every_browser(pages: Pages) -> None:
    first = await pages.account()
    second = await pages.signed_in("ada@example.com")
    await first.get("/ui/account")
    answer = await first.post("/ui/account/signout-everywhere", {})
    assert answer.headers["location"] == "/ui/signin?notice=n_signed_out_everywhere"
    for browser in (first, second):
        assert (await browser.get("/ui/account")).headers["location"] == "/ui/signin"


async def test_one_session_signed_out_from_the_list(pages: Pages) -> None:
    first = await pages.account()
    second = await pages.signed_in("ada@example.com")
    await second.get("/ui/account")
    sessions = [a for t, a in second.page().elements if t == "li" and "data-session-id" in a]
    [other] = [a["data-session-id"] for a in sessions if "data-current" not in a]
    answer = await second.post(f"/ui/account/sessions/{other}/signout", {})
    assert answer.headers["location"] == "/ui/account?notice=n_session_ended"
    assert (await first.get("/ui/account")).headers["location"] == "/ui/signin"
    assert (await second.get("/ui/account")).status_code == 200


# --- CSRF and origins --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),  # no token
        ("0" * 64, {}),  # a wrong token
        ("", {"origin": "https://evil.example"}),  # the right token from a foreign page
        ("", {"sec-fetch-site": "cross-site"}),  # a cross-site form post
        ("", {"sec-fetch-site": "same-site"}),  # a sibling host is another site too
    ],
)
async def test_a_cross_site_form_post_is_refused(
    pages: Pages, csrf: str | None, headers: dict[str, str]
) -> None:
    await pages.api().signed_up()
    browser = pages.browser()
    await browser.get("/ui/signin")
    fields = {"email": "ada@example.com", "password": PASSWORD}
    answer = await browser.post("/ui/signin", fields, csrf=csrf, **headers)
    assert answer.status_code == 403
    assert "This form expired or came from another site" in answer.text
    assert browser.cookie("gatehouse_session") is None


async def test_a_state_change_on_the_account_needs_the_session_token(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    stranger = pages.browser()
    await stranger.get("/ui/signin")
    for token in (None, stranger.csrf(), "0" * 64):
        answer = await browser.post("/ui/account/profile", {"name": "Mallory"}, csrf=token)
        assert answer.status_code == 403
    answer = await browser.post(
        "/ui/account/profile", {"name": "Mallory"}, origin="https://evil.example"
    )
    assert answer.status_code == 403
    await browser.get("/ui/account")
    assert browser.page().value("profile-name") == "Ada"


async def test_a_browser_without_its_cookie_has_no_token(pages: Pages) -> None:
    """A token read from someone else's page is bound to their browser, not to this one."""
    victim = pages.browser()
    await victim.get("/ui/signin")
    attacker = pages.browser()
    answer = await attacker.client.post(
        "/ui/signin",
        data={"csrf": victim.csrf(), "email": "ada@example.com", "password": PASSWORD},
        headers={"origin": ORIGIN},
    )
    assert answer.status_code == 403


async def test_a_script_request_without_cookies_leaves_the_browser_id_alone(
    pages: Pages,
) -> None:
    """Cookies cleared with a signed-in tab still open: that tab's script asks for a socket
    token without any cookie while a new tab shows the sign-in form. The script's refusal must
    not give the browser another id, or the new tab's form would be refused as forged (the
    browser suite's return_to test lost this race once)."""
    await pages.api().signed_up()
    browser = pages.browser()
    await browser.get("/ui/signin")
    bound = browser.cookie("gatehouse_browser")
    assert bound
    browser.client.cookies.clear()  # the old tab's request carries none
    old_tab = await browser.client.post(
        "/ui/api/token", json={}, headers={"origin": ORIGIN, "x-csrf-token": "x"}
    )
    assert old_tab.status_code in (401, 403)
    assert not old_tab.headers.get_list("set-cookie")
    browser.client.cookies.set("gatehouse_browser", bound)
    answer = await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/account"


async def test_the_page_api_needs_the_token_header_and_json(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    headers = {"origin": ORIGIN}
    bare = await browser.client.post("/ui/api/token", json={}, headers=headers)
    assert bare.status_code == 403
    assert bare.json()["code"] == "forbidden"
    as_form = await browser.client.post(
        "/ui/api/token", data={"a": "b"}, headers={**headers, "x-csrf-token": browser.csrf()}
    )
    assert as_form.status_code == 415
    foreign = await browser.client.post(
        "/ui/api/token",
        json={},
        headers={"origin": "https://evil.example", "x-csrf-token": browser.csrf()},
    )
    assert foreign.status_code == 403
    assert (await browser.api("/ui/api/token")).status_code == 200


# --- the socket's token --------------------------------------------------------------------


async def test_the_socket_token_belongs_to_the_browser_session(pages: Pages) -> None:
    browser = await pages.account()
    await browser.get("/ui/account")
    answer = await browser.api("/ui/api/token")
    assert answer.status_code == 200
    data = answer.json()["data"]
    claims = pages.services.ctx.tokens.verify(data["token"], pages.clock())
    assert claims.sid == data["session_id"]
    assert str(browser.cookie("gatehouse_session")).startswith(claims.sid + ".")
    assert 0 < data["expires_in"] <= 900
    assert (await browser.client.get("/ui/api/session")).json()["data"]["live"] is True
    await browser.post("/ui/signout", {})
    stale = await browser.client.get("/ui/api/session")
    assert stale.status_code == 401


# --- return_to -------------------------------------------------------------------------------


async def test_return_to_an_allowed_origin(pages: Pages) -> None:
    await pages.api().signed_up()
    browser = pages.browser()
    target = APP + "/welcome?from=gatehouse"
    await browser.get("/ui/signin?" + urlencode({"return_to": target}))
    kept = [a for t, a in browser.page().elements if t == "input" and a["name"] == "return_to"]
    assert [a["value"] for a in kept] == [target]  # carried by the form
    fields = {"email": "ada@example.com", "password": PASSWORD, "return_to": target}
    answer = await browser.post("/ui/signin", fields)
    assert answer.status_code == 303
    assert answer.headers["location"] == target
    assert APP in answer.headers["content-security-policy"]  # form-action lets it through
    # Signed in, the sign-in page sends an allowed return_to straight back.
    again = await browser.get("/ui/signin?" + urlencode({"return_to": target}))
    assert again.headers["location"] == target


TRICKS = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https:\\\\app.example.com",
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "https://app.example.com@evil.example/",
    "https://user:pass@app.example.com/",
    "https://evil.example\\@app.example.com/",
    "https://app.example.com.evil.example/",
    "http://app.example.com/",
    "https://app.example.com:8443/",
    " https://app.example.com/",
    "https://app.example.com/\n",
    "https://app.example.com\t/",
    "https:app.example.com",
    "https://app.example.com:notaport/",
    "/ui/account/../../evil",
    "",
]


@pytest.mark.parametrize("trick", TRICKS)
async def test_every_other_return_to_goes_to_the_account(pages: Pages, trick: str) -> None:
    await pages.api().signed_up()
    browser = pages.browser()
    await browser.get("/ui/signin")
    fields = {"email": "ada@example.com", "password": PASSWORD, "return_to": trick}
    answer = await browser.post("/ui/signin", fields)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/account"


def test_the_return_to_check_itself() -> None:
    allowed = (APP,)
    assert returns.allowed(APP, allowed) == APP
    assert returns.allowed(APP + "/a/b?c=d#e", allowed) == APP + "/a/b?c=d#e"
    assert returns.allowed("HTTPS://APP.EXAMPLE.COM/x", allowed) == "HTTPS://APP.EXAMPLE.COM/x"
    assert returns.allowed("https://app.example.com:443/x", allowed) is not None
    for trick in TRICKS:
        assert returns.allowed(trick, allowed) is None, trick
    assert returns.allowed(APP, ()) is None  # nothing listed: nothing allowed
    assert returns.target(None, allowed) == "/ui/account"


def test_the_setting_takes_origins_only() -> None:
    settings = Settings(_env_file=None, ui_return_to=["https://App.Example.com:443/"])  # type: ignore[call-arg]
    assert settings.ui_return_to == [APP]
    for bad in (
        "ftp://app.example.com",
        "https://app.example.com/path",
        "app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:x",
    ):
        with pytest.raises(RuntimeError, match="GATEHOUSE_UI_RETURN_TO"):
            Settings(_env_file=None, ui_return_to=[bad])  # type: ignore[call-arg]
