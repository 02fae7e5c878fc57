"""Security notices on a running `gatehouse serve` (PostgreSQL, Redis, Kafka, SMTP): the owner's
mailbox hears of a sign-in from a new device and of a password reset, through the outbox, the
relay, Kafka and the courier, and the open socket hears `security.notice` first."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import socketio

from tests.conftest import MailSink, body_of, unique
from tests.e2e.stack import mailed_code
from tests.e2e.test_takeover import NEW_PASSWORD, PASSWORD, Serve, reset_by_mail, serve

pytestmark = pytest.mark.e2e
__all__ = ["serve"]  # a fixture, imported for this module's process
PHONE_BROWSER = "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 Chrome/131.0 Mobile"


async def test_the_owner_is_told_of_a_new_device_and_of_a_reset(
    serve: Serve, mail_sink: MailSink
) -> None:
    email = f"{unique('noticed')}@example.com"
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
        body = {"name": "Ada", "email": email, "password": PASSWORD}
        assert (await client.post("/api/auth/register", json=body)).status_code == 202
        code = await mailed_code(mail_sink, email, 1)
        verified = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert verified.status_code == 201, verified.text
        credentials = {"email": email, "password": PASSWORD}
        first = await client.post("/api/auth/login", json=credentials)
        assert first.status_code == 200
        again = await client.post("/api/auth/login", json=credentials)
        assert again.status_code == 200
        await asyncio.sleep(1.0)
        assert len(mail_sink.to(email)) == 1, "a known device (and the first sign-in) is no news"

        stranger = await client.post(
            "/api/auth/login", json=credentials, headers={"User-Agent": PHONE_BROWSER}
        )
        assert stranger.status_code == 200
        [_code, notice] = await mail_sink.wait_for(email, 2)
        assert notice["Subject"] == "New sign-in to your account"
        text = body_of(notice)
        assert "device new to it" in text and "Android 15" in text and "http" not in text

        listener = socketio.AsyncClient(reconnection=False)
        heard: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        listener.on("security.notice", heard.put)
        await listener.connect(
            serve.base, auth={"token": first.json()["data"]["token"]}, socketio_path="socket.io"
        )
        try:
            await reset_by_mail(client, mail_sink, email, 3)
            pushed = await asyncio.wait_for(heard.get(), 5)
            assert pushed["type"] == "password_reset" and pushed["time"]
        finally:
            await listener.disconnect()
        mails = await mail_sink.wait_for(email, 4)
        assert mails[3]["Subject"] == "Security notice for your account"
        assert "was reset with a recovery code" in body_of(mails[3])
        assert NEW_PASSWORD not in body_of(mails[3])
