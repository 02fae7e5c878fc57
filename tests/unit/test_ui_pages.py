"""The self-service pages (DESIGN 10) as HTML: each renders with its exact labels in English and
in Spanish, under a strict Content-Security-Policy, with no inline script, handler or style, a
label for every field, and nothing loaded from another host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.ui.assets import FILES
from gatehouse.ui.text import preferred

from .api_client import PASSWORD
from .ui_browser import EN, ES, Browser, Html, Pages, open_pages

LABELS = {
    "en": {
        "name": "Name",
        "email": "Email",
        "password": "Password",
        "current_password": "Current password",
        "new_password": "New password",
        "phone": "Phone",
        "code": "Code",
        "recovery_code": "Recovery code",
        "create_account": "Create account",
        "verify": "Verify",
        "sign_in": "Sign in",
        "passkey_sign_in": "Sign in with a passkey",
        "add_passkey": "Add a passkey",
        "totp_setup": "Set up authenticator app",
        "sign_out": "Sign out",
        "sign_out_everywhere": "Sign out everywhere",
        "delete_account": "Delete account",
    },
    "es": {
        "name": "Nombre",
        "email": "Correo electrónico",
        "password": "Contraseña",
        "current_password": "Contraseña actual",
        "new_password": "Nueva contraseña",
        "phone": "Teléfono",
        "code": "Código",
        "recovery_code": "Código de recuperación",
        "create_account": "Crear cuenta",
        "verify": "Verificar",
        "sign_in": "Iniciar sesión",
        "passkey_sign_in": "Iniciar sesión con una llave de acceso",
        "add_passkey": "Añadir una llave de acceso",
        "totp_setup": "Configurar la app de autenticación",
        "sign_out": "Cerrar sesión",
        "sign_out_everywhere": "Cerrar sesión en todas partes",
        "delete_account": "Eliminar cuenta",
    },
}
HEADERS = {"en": EN, "es": ES}


@pytest.fixture
async def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pages]:
    async with open_pages(tmp_path, monkeypatch) as opened:
        yield opened


def assert_clean(html: Html, lang: str) -> None:
    """Strict-CSP-ready and accessible at a glance: no inline script, event handler or style;
    scripts and styles from this origin; every visible field labelled; the language set."""
    assert html.inline_scripts == 0
    html_tag = next(attrs for tag, attrs in html.elements if tag == "html")
    assert html_tag.get("lang") == lang
    for tag, attrs in html.elements:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        assert tag != "style"
        if tag == "script":
            assert attrs.get("src", "").startswith("/ui/static/"), attrs
        if tag == "link":
            assert attrs["href"].startswith("/ui/static/"), attrs
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            if "hidden" in attrs:  # a browser's username hint for its password manager
                continue
            assert attrs.get("id") in html.labels, f"no <label for> for {attrs}"


def assert_labels(html: Html, lang: str, fields: list[str], buttons: list[str]) -> None:
    labels = set(html.labels.values())
    for key in fields:
        assert LABELS[lang][key] in labels, (key, labels)
    for key in buttons:
        assert LABELS[lang][key] in html.buttons, (key, html.buttons)


def assert_page_headers(browser: Browser) -> None:
    assert browser.last is not None
    csp = browser.last.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ):
        assert directive in csp, csp
    assert "unsafe" not in csp
    assert browser.last.headers["cache-control"] == "no-store"
    assert browser.last.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_pages_before_sign_in_have_their_labels(pages: Pages, lang: str) -> None:
    browser = pages.browser(HEADERS[lang])
    expected = {
        "/ui/signup": (["name", "email", "password", "phone"], ["create_account"]),
        "/ui/verify": (["email", "code"], ["verify"]),
        "/ui/signin": (["email", "password"], ["sign_in", "passkey_sign_in"]),
        "/ui/recover": (["email", "phone"], []),
    }
    for path, (fields, buttons) in expected.items():
        answer = await browser.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/html")
        html = browser.page()
        assert_clean(html, lang)
        assert_labels(html, lang, fields, buttons)
        assert_page_headers(browser)


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_second_steps_have_their_labels(pages: Pages, lang: str) -> None:
    browser = pages.browser(HEADERS[lang])
    await browser.get("/ui/recover")
    answer = await browser.post("/ui/recover", {"email": "nobody@example.com", "channel": "sms"})
    assert answer.status_code == 200
    assert_clean(browser.page(), lang)
    assert_labels(browser.page(), lang, ["code", "new_password"], [])


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_account_page_has_its_labels(pages: Pages, lang: str) -> None:
    browser = await pages.account()
    browser.headers = dict(HEADERS[lang])
    answer = await browser.get("/ui/account")
    assert answer.status_code == 200
    html = browser.page()
    assert_clean(html, lang)
    fields = ["name", "phone", "current_password", "new_password", "password"]
    buttons = ["add_passkey", "totp_setup", "sign_out", "sign_out_everywhere", "delete_account"]
    assert_labels(html, lang, fields, buttons)
    # The header's "Sign out" and one per session, this one included.
    assert html.buttons.count(LABELS[lang]["sign_out"]) == 2
    assert_page_headers(browser)


def test_the_language_follows_accept_language() -> None:
    assert preferred(None) == "en"
    assert preferred("") == "en"
    assert preferred("es") == "es"
    assert preferred("es-MX") == "es"
    assert preferred("fr-FR,fr;q=0.9,es;q=0.8,en;q=0.7") == "es"
    assert preferred("en-GB,en;q=0.9,es;q=0.8") == "en"
    assert preferred("es;q=0.5,en;q=0.9") == "en"
    assert preferred("es;q=0,en") == "en"
    assert preferred("de,fr") == "en"
    assert preferred("es;q=nonsense,en;q=0.1") == "en"


async def test_the_root_leads_to_sign_in(pages: Pages) -> None:
    browser = pages.browser()
    answer = await browser.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/signin"


async def test_assets_are_ours_and_typed(pages: Pages) -> None:
    browser = pages.browser()
    for name, media_type in FILES.items():
        answer = await browser.get(f"/ui/static/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type
        assert answer.headers["x-content-type-options"] == "nosniff"
        # No other host: nothing is fetched or imported from a CDN.
        assert "//cdn" not in answer.text and "https://" not in answer.text, name
    assert (await browser.get("/ui/static/../templates/base.html")).status_code == 404
    assert (await browser.get("/ui/static/secrets.json")).status_code == 404


async def test_the_api_keeps_its_own_policy(pages: Pages) -> None:
    """The pages set their own policy; the API's `default-src 'none'` stays for /api."""
    browser = pages.browser()
    answer = await browser.get("/api/auth/profile")
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_the_pages_are_not_in_the_openapi_document(pages: Pages) -> None:
    document = (await pages.browser().get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path == "/" or path.startswith("/ui")]


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_second_step_and_the_qr_code_page_have_their_labels(
    pages: Pages, lang: str
) -> None:
    from .test_ui_journeys import set_up_totp

    first = await pages.account()
    await first.get("/ui/account")
    first.headers = dict(HEADERS[lang])
    await first.post("/ui/account/totp", {})
    assert_clean(first.page(), lang)  # the QR code is an <img> of a data: URI, no script
    first.headers = dict(EN)
    await set_up_totp(pages, first)
    assert_clean(first.page(), "en")  # with the recovery codes shown
    browser = pages.browser(HEADERS[lang])
    await browser.get("/ui/signin")
    await browser.post("/ui/signin", {"email": "ada@example.com", "password": PASSWORD})
    html = browser.page()
    assert_clean(html, lang)
    # (The passkey button is there only for an account with a passkey.)
    assert_labels(html, lang, ["code", "recovery_code"], ["verify"])
