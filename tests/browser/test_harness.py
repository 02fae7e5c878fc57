"""The browser harness itself, on a page Gatehouse serves without the self-service pages: `/docs`
(Swagger UI, offline, under a strict CSP). Chromium starts and renders at both sizes, axe-core
runs in the page with its CSP on and fails on a seeded serious violation, and a passkey made by
Chromium's virtual authenticator registers and signs in through the API: the relying party of
`gatehouse serve` (rp id `localhost`) and the browser's origin agree."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.browser.accounts import api, create_account, sign_in
from tests.browser.harness import Gatehouse, Mailbox, Visitor

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_chromium_renders_the_docs_at_both_sizes_and_axe_runs_under_the_csp(
    browse: Callable[..., Visitor],
) -> None:
    for size in ("phone", "desktop"):
        visitor = browse(size)
        response = visitor.goto("/docs")
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1]
        visitor.page.locator(".swagger-ui .info .title").wait_for()
        shot = visitor.shoot("docs", full_page=False)
        assert shot.stat().st_size > 10_000
        # Swagger UI is not one of our pages: its findings are kept, not held against it.
        assert isinstance(visitor.axe("docs", fail=False), list)

    # An inline script is refused by the CSP (so axe is loaded same-origin, not inline)...
    visitor.tolerate = True  # the refusal is logged: this test asks for it
    with pytest.raises(Exception, match=r"Content Security Policy|Refused"):
        visitor.page.add_script_tag(content="window.inlineRan = true;")
    assert visitor.page.evaluate("() => window.inlineRan === undefined")
    # ...and a serious violation fails the page: an unlabelled field, a wordless button.
    visitor.page.evaluate(
        """() => {
            const form = document.createElement('form');
            form.innerHTML = '<input type="text" name="x"><button type="submit"></button>';
            document.body.prepend(form);
        }"""
    )
    with pytest.raises(AssertionError) as failed:
        visitor.axe("docs-seeded")
    assert '"label"' in str(failed.value) and '"button-name"' in str(failed.value)


def test_a_virtual_authenticator_passkey_registers_and_signs_in_through_the_api(
    browse: Callable[..., Visitor], gatehouse: Gatehouse, mail: Mailbox
) -> None:
    account = create_account(gatehouse, mail)
    token = sign_in(gatehouse, account)
    visitor = browse()
    visitor.goto("/docs")  # any page of the origin the relying party names
    authenticator = visitor.authenticator()
    bearer = {"Authorization": f"Bearer {token}"}
    with api(gatehouse) as client:
        started = client.post("/api/auth/passkeys/register/options", headers=bearer)
        assert started.status_code == 200, started.text
        flow = started.json()["data"]
        credential = visitor.page.evaluate(
            """async (options) => {
                const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
                const made = await navigator.credentials.create({publicKey});
                return made.toJSON();
            }""",
            flow["options"],
        )
        body = {"flow_id": flow["flow_id"], "credential": credential, "name": "Chromium"}
        added = client.post("/api/auth/passkeys/register/verify", json=body, headers=bearer)
        assert added.status_code == 201, added.text
        assert len(authenticator.credentials()) == 1

        started = client.post("/api/auth/passkeys/login/options", json={})
        assert started.status_code == 200, started.text
        flow = started.json()["data"]
        assertion = visitor.page.evaluate(
            """async (options) => {
                const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
                const got = await navigator.credentials.get({publicKey});
                return got.toJSON();
            }""",
            flow["options"],
        )
        body = {"flow_id": flow["flow_id"], "credential": assertion}
        signed = client.post("/api/auth/passkeys/login/verify", json=body)
        assert signed.status_code == 200, signed.text
        assert signed.json()["data"]["user"]["id"] == account.user_id
