"""The authenticator-app routes over HTTP, on the embedded stack (`gatehouse serve`'s SQLite and
in-process bus): set-up, confirm, the two-step sign-in, recovery codes, removal, and the
answers of each refusal."""

from __future__ import annotations

import pyotp

from .api_client import EMAIL, PASSWORD, Api


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_app_is_set_up_and_then_needed_at_every_sign_in(api: Api) -> None:
    await api.signed_up()
    session = await api.logged_in()
    auth = bearer(session["token"])
    setup = await api.client.post("/api/auth/mfa/totp", headers=auth)
    assert setup.status_code == 200, setup.text
    secret = setup.json()["data"]["secret"]
    totp = pyotp.TOTP(secret)
    wrong = await api.client.post(
        "/api/auth/mfa/totp/confirm", json={"code": "000000"}, headers=auth
    )
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_code")
    confirm = await api.client.post(
        "/api/auth/mfa/totp/confirm", json={"code": totp.at(api.clock.now)}, headers=auth
    )
    assert confirm.status_code == 200, confirm.text
    codes = confirm.json()["data"]["recovery_codes"]
    status = await api.client.get("/api/auth/mfa", headers=auth)
    assert status.json()["data"] == {"totp": True, "passkeys": False, "recovery_codes_left": 10}

    first = await api.post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert first.status_code == 200
    body = first.json()
    assert body["message"] == "Second factor required"
    assert set(body["data"]) == {"mfa_required", "mfa_token", "methods", "expires_in"}
    assert "token" not in body["data"] and "refresh_token" not in body["data"]
    mfa_token = body["data"]["mfa_token"]
    api.clock.advance(30)
    done = await api.post(
        "/api/auth/login/mfa", {"mfa_token": mfa_token, "code": totp.at(api.clock.now)}
    )
    assert done.status_code == 200, done.text
    assert done.json()["message"] == "Logged in successfully"
    assert done.json()["data"]["token"] and done.json()["data"]["refresh_token"]
    again = await api.post(
        "/api/auth/login/mfa", {"mfa_token": mfa_token, "code": totp.at(api.clock.now)}
    )
    assert (again.status_code, again.json()["code"]) == (401, "invalid_token")

    second = await api.post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
    token = second.json()["data"]["mfa_token"]
    both = await api.post(
        "/api/auth/login/mfa", {"mfa_token": token, "code": "123456", "recovery_code": codes[0]}
    )
    assert (both.status_code, both.json()["code"]) == (422, "invalid_input")
    recovered = await api.post(
        "/api/auth/login/mfa", {"mfa_token": token, "recovery_code": codes[0]}
    )
    assert recovered.status_code == 200, recovered.text
    unknown_field = await api.post("/api/auth/login/mfa", {"mfa_token": token, "role": "admin"})
    assert unknown_field.status_code == 422

    # Removing the app once the sign-in is not recent: the password and a code.
    api.clock.advance(600)
    fresh = done.json()["data"]["token"]
    refused = await api.client.delete("/api/auth/mfa/totp", headers=bearer(fresh))
    assert (refused.status_code, refused.json()["code"]) == (403, "reauth_required")
    removed = await api.client.request(
        "DELETE",
        "/api/auth/mfa/totp",
        json={"current_password": PASSWORD, "code": totp.at(api.clock.now)},
        headers=bearer(fresh),
    )
    assert removed.status_code == 200, removed.text
    plain = await api.post("/api/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert plain.json()["message"] == "Logged in successfully"


async def test_a_forged_or_foreign_mfa_token_is_refused(api: Api) -> None:
    await api.signed_up()
    for token in ("", "a.b.c.d", "x" * 600):
        answer = await api.post("/api/auth/login/mfa", {"mfa_token": token, "code": "123456"})
        assert answer.status_code in (401, 422), answer.text
    answer = await api.post(
        "/api/auth/login/mfa", {"mfa_token": "a.b.9999999999.d", "code": "123456"}
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")
