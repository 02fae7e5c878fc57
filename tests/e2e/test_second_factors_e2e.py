"""Issue 13's journey on a running `gatehouse serve` (PostgreSQL, Redis, Kafka, SMTP): enrol an
authenticator app (codes from pyotp) and a passkey (a software authenticator, attestation
`none`), sign out, sign in passwordless with the passkey, with password and app, with password
and a recovery code (which then fails), and with password and passkey; every step over HTTP,
the second step of a sign-in also through the job door; the owner's mailbox hears of each new
factor. The relying party is the default one (`http://localhost:8000`), the browser's origin
the soft authenticator claims."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.conftest import MailSink, unique
from tests.e2e.stack import mailed_code, serving
from tests.e2e.test_takeover import PASSWORD, Serve
from tests.integration.conftest import create_database, drop_database
from tests.softauthn import SoftAuthenticator

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["postgres", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new migrated database of each production kind, for this test alone."""
    url, admin = create_database(request.param, tmp_path)
    try:
        yield url
    finally:
        drop_database(url, admin)


@pytest.fixture
async def serve(
    database: str, own_redis: str, kafka_bootstrap: str, mail_sink: MailSink, tmp_path: Path
) -> AsyncIterator[Serve]:
    """`gatehouse serve` (every production role in one process) on the real services."""
    with serving(
        tmp_path,
        database,
        own_redis,
        kafka_bootstrap,
        mail_sink.url,
        "mfa-courier",
        GATEHOUSE_RATE_LIMITS="{}",
    ) as (base, log):
        yield Serve(base, log)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def data(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["data"]
    return found


async def next_step_code(totp: pyotp.TOTP, after: str) -> str:
    """A code of a newer time step than `after`'s (a code is accepted once): the next step's,
    within the one step of drift the server allows, so no test waits 30 seconds."""
    code = totp.at(time.time() + 30)
    assert code != after
    return code


async def job_result(client: httpx.AsyncClient, queue: str, body: dict[str, Any]) -> dict[str, Any]:
    job_id = data(await client.post(f"/api/jobs/{queue}", json={"data": body}), 202)["job_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = data(await client.get(f"/api/jobs/{queue}/{job_id}"))
        if state["state"] in ("completed", "failed"):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {queue}/{job_id} did not finish")


async def test_enrol_both_factors_and_sign_in_every_way(serve: Serve, mail_sink: MailSink) -> None:
    email = f"{unique('mfa')}@example.com"
    device = SoftAuthenticator()
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
        body = {"name": "Ada", "email": email, "password": PASSWORD}
        data(await client.post("/api/auth/register", json=body), 202)
        code = await mailed_code(mail_sink, email, 1)
        data(await client.post("/api/auth/verify-otp", json={"email": email, "otp": code}), 201)
        credentials = {"email": email, "password": PASSWORD}
        session = data(await client.post("/api/auth/login", json=credentials))
        auth = bearer(session["token"])

        # The app: set up, confirm with pyotp's code; ten recovery codes.
        setup = data(await client.post("/api/auth/mfa/totp", headers=auth))
        totp = pyotp.TOTP(setup["secret"])
        assert setup["otpauth_uri"] == totp.provisioning_uri(name=email, issuer_name="Gatehouse")
        confirming = totp.now()
        confirm = {"code": confirming}
        codes = data(await client.post("/api/auth/mfa/totp/confirm", json=confirm, headers=auth))
        recovery = codes["recovery_codes"]
        assert len(recovery) == 10

        # The passkey: options, the authenticator's answer, verified and kept.
        started = data(await client.post("/api/auth/passkeys/register/options", headers=auth))
        answer = device.create(started["options"])
        verify = {"flow_id": started["flow_id"], "credential": answer, "name": "Laptop"}
        added = data(
            await client.post("/api/auth/passkeys/register/verify", json=verify, headers=auth), 201
        )
        assert added["passkey"]["name"] == "Laptop" and "recovery_codes" not in added
        listed = data(await client.get("/api/auth/passkeys", headers=auth))["passkeys"]
        assert [p["id"] for p in listed] == [added["passkey"]["id"]]

        # Sign out; passwordless with the passkey.
        data(
            await client.post("/api/auth/logout", json={"refresh_token": session["refresh_token"]})
        )
        started = data(await client.post("/api/auth/passkeys/login/options", json={}))
        assert (
            "allowCredentials" not in started["options"]
            or not started["options"]["allowCredentials"]
        )
        assertion = device.get(started["options"])
        signed = data(
            await client.post(
                "/api/auth/passkeys/login/verify",
                json={"flow_id": started["flow_id"], "credential": assertion},
            )
        )
        assert signed["user"]["email"] == email
        replay = await client.post(
            "/api/auth/passkeys/login/verify",
            json={"flow_id": started["flow_id"], "credential": assertion},
        )
        assert replay.status_code == 401, replay.text

        # Password, then the app's code (of a newer step than the confirming one).
        first = data(await client.post("/api/auth/login", json=credentials))
        assert first["mfa_required"] is True and set(first["methods"]) >= {"totp", "passkey"}
        code = await next_step_code(totp, confirming)
        finish = {"mfa_token": first["mfa_token"], "code": code}
        with_app = data(await client.post("/api/auth/login/mfa", json=finish))
        assert with_app["token"] and with_app["refresh_token"]
        sessions = data(await client.get("/api/auth/sessions", headers=bearer(with_app["token"])))
        current = next(s for s in sessions["sessions"] if s["current"])
        assert (current["aal"], current["amr"]) == (2, ["pwd", "otp", "mfa"])
        again = await client.post(
            "/api/auth/login/mfa",
            json={
                "mfa_token": data(await client.post("/api/auth/login", json=credentials))[
                    "mfa_token"
                ],
                "code": code,
            },
        )
        assert (again.status_code, again.json()["code"]) == (400, "invalid_code")  # replayed

        # Password, then a recovery code; the same code then fails.
        token = data(await client.post("/api/auth/login", json=credentials))["mfa_token"]
        finish = {"mfa_token": token, "recovery_code": recovery[0]}
        data(await client.post("/api/auth/login/mfa", json=finish))
        token = data(await client.post("/api/auth/login", json=credentials))["mfa_token"]
        spent = await client.post(
            "/api/auth/login/mfa", json={"mfa_token": token, "recovery_code": recovery[0]}
        )
        assert (spent.status_code, spent.json()["code"]) == (400, "invalid_code")

        # Password, then the passkey (options limited to this account's passkeys).
        options = data(
            await client.post("/api/auth/passkeys/login/options", json={"mfa_token": token})
        )
        allowed = [c["id"] for c in options["options"]["allowCredentials"]]
        assert allowed == [answer["id"]]
        finish = {
            "mfa_token": token,
            "flow_id": options["flow_id"],
            "credential": device.get(options["options"]),
        }
        with_key = data(await client.post("/api/auth/login/mfa", json=finish))
        claims = data(await client.get("/api/auth/sessions", headers=bearer(with_key["token"])))
        current = next(s for s in claims["sessions"] if s["current"])
        assert (current["aal"], current["amr"]) == (2, ["pwd", "hwk", "mfa"])

        # The job door: verify-user answers mfa_required; the token is kept redacted at rest.
        step = await job_result(client, "verify-user", credentials)
        assert step["result"]["data"]["mfa_required"] is True
        assert step["result"]["data"]["mfa_token"] == "[redacted]"

    # The owner's mailbox heard of the app and the passkey and the recovery code's use.
    subjects = [m["Subject"] for m in await mail_sink.wait_for(email, 4)]
    assert subjects.count("Security notice for your account") >= 3, subjects
