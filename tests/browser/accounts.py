"""Accounts made through the HTTP API (not the pages) for the browser tests that start from an
existing account, and the names, emails and phones the tests use."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx
import pyotp

from tests.browser.harness import FakeTwilio, Gatehouse, Mailbox
from tests.conftest import unique

PASSWORD = "Browser-Passw0rd-4417"
NEW_PASSWORD = "Browser-New-Passw0rd-9902"


def new_email(prefix: str = "browser") -> str:
    return f"{unique(prefix)}@example.com"


def new_phone() -> str:
    """A UK number of its own (+44 20 7xxx xxxx), unique enough for one run."""
    return f"+44207{random.randrange(10**6, 10**7)}"


@dataclass
class Account:
    name: str
    email: str
    password: str
    user_id: str


def api(gatehouse: Gatehouse) -> httpx.Client:
    return httpx.Client(base_url=gatehouse.base, timeout=30)


def create_account(
    gatehouse: Gatehouse, mail: Mailbox, name: str = "Ada Lovelace", password: str = PASSWORD
) -> Account:
    """A verified account with a password, through the API: register, the mailed code, verify."""
    email = new_email()
    with api(gatehouse) as client:
        before = mail.count(email)
        body = {"name": name, "email": email, "password": password}
        registered = client.post("/api/auth/register", json=body)
        assert registered.status_code in (200, 201, 202), registered.text
        code = mail.code(email, before)
        verified = client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert verified.status_code == 201, verified.text
        return Account(name, email, password, verified.json()["data"]["user"]["id"])


def sign_in(gatehouse: Gatehouse, account: Account) -> str:
    """An access token of a new session (the API's own sign-in: a device of its own)."""
    with api(gatehouse) as client:
        body = {"email": account.email, "password": account.password}
        signed = client.post("/api/auth/login", json=body)
        assert signed.status_code == 200, signed.text
        token: str = signed.json()["data"]["token"]
        return token


class AuthenticatorApp:
    """An authenticator app on the tests' side (pyotp): each code is of a time step newer than
    the last one given, as Gatehouse accepts a step once only (one step of drift either way)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = 0

    def code(self) -> str:
        now = int(time.time()) // 30
        step = max(now, self.last_step + 1)
        while step > int(time.time()) // 30 + 1:  # the next step is not yet accepted: wait
            time.sleep(0.5)
        self.last_step = step
        return str(self.totp.generate_otp(step))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def enable_totp(gatehouse: Gatehouse, account: Account) -> tuple[AuthenticatorApp, list[str]]:
    """An authenticator app on the account, through the API; the app and the recovery codes."""
    token = sign_in(gatehouse, account)
    with api(gatehouse) as client:
        started = client.post("/api/auth/mfa/totp", headers=bearer(token))
        assert started.status_code == 200, started.text
        app = AuthenticatorApp(started.json()["data"]["secret"])
        body = {"code": app.code()}
        confirmed = client.post("/api/auth/mfa/totp/confirm", json=body, headers=bearer(token))
        assert confirmed.status_code == 200, confirmed.text
        return app, confirmed.json()["data"]["recovery_codes"]


def add_phone(gatehouse: Gatehouse, twilio: FakeTwilio, account: Account) -> str:
    """A new confirmed phone on the account, through the API (its code read at the fake
    Twilio); the number."""
    phone = new_phone()
    token = sign_in(gatehouse, account)
    with api(gatehouse) as client:
        before = twilio.count(phone)
        asked = client.patch("/api/auth/profile", json={"phone": phone}, headers=bearer(token))
        assert asked.status_code == 202, asked.text
        body = {"otp": twilio.code(phone, before)}
        confirmed = client.post("/api/auth/phone/verify", json=body, headers=bearer(token))
        assert confirmed.status_code == 200, confirmed.text
    return phone
