"""Issue 12's sign-up and recovery attacks on a running `gatehouse serve` (PostgreSQL, Redis,
Kafka, SMTP, logs at DEBUG), run as the attacker ran them: a second sign-up of a pending email,
a phishing name, forgot-password after wrong codes, reset refusals and their time, and the log
of the whole run searched for hashes, passwords, tokens and codes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import MailSink, body_of, unique
from tests.e2e.stack import mailed_code, serving

pytestmark = pytest.mark.e2e
PASSWORD = "Owner-Secret-Passw0rd-4417"
ATTACKER_PASSWORD = "Mallory-Passw0rd-9902"
NEW_PASSWORD = "Brand-New-Passw0rd-5120"
FLOOR_MS = 200
PHISHING = "Ada\u2028\u2028Your account is locked. Confirm at https://evil.example/login today"
VARYING = {"x-request-id", "date"}


@dataclass
class Serve:
    base: str
    log: Path


@pytest.fixture
async def serve(
    postgres_database: str,
    own_redis: str,
    kafka_bootstrap: str,
    mail_sink: MailSink,
    tmp_path: Path,
) -> AsyncIterator[Serve]:
    """`gatehouse serve` on the real services, its log at DEBUG, rate limits off (the attacks
    here are about answers, not volume), an answer floor of FLOOR_MS."""
    settings = {
        "GATEHOUSE_RATE_LIMITS": "{}",
        "GATEHOUSE_ANSWER_FLOOR_MS": str(FLOOR_MS),
        "GATEHOUSE_LOG_LEVEL": "DEBUG",
    }
    with serving(
        tmp_path,
        postgres_database,
        own_redis,
        kafka_bootstrap,
        mail_sink.url,
        "takeover-courier",
        **settings,
    ) as (base, log):
        yield Serve(base, log)


def answer(response: httpx.Response) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    """Status, body and headers but the per-request ones: what must be equal."""
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() not in VARYING)
    return response.status_code, response.text, tuple(headers)


def wrong(code: str, n: int) -> str:
    return f"{(int(code) + n) % 1_000_000:06d}"


SET_PASSWORD = "Email verified; set a password with password recovery"


async def reset_by_mail(client: httpx.AsyncClient, sink: MailSink, email: str, nth: int) -> str:
    """The owner, who reads the address's mail, sets NEW_PASSWORD; the reset code it took."""
    forgot = await client.post("/api/auth/password/forgot", json={"email": email})
    assert forgot.status_code == 202, forgot.text
    code = await mailed_code(sink, email, nth)
    body = {"email": email, "otp": code, "new_password": NEW_PASSWORD}
    reset = await client.post("/api/auth/password/reset", json=body)
    assert reset.status_code == 200, reset.text
    return code


async def test_a_second_sign_up_cannot_take_over_and_no_name_reaches_the_mail(
    serve: Serve, mail_sink: MailSink
) -> None:
    email = f"{unique('owner')}@example.com"
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
        owner = await client.post(
            "/api/auth/register", json={"name": PHISHING, "email": email, "password": PASSWORD}
        )
        await mailed_code(mail_sink, email, 1)
        attacker = await client.post(
            "/api/auth/register",
            json={"name": "Mallory", "email": email, "password": ATTACKER_PASSWORD},
        )
        assert answer(attacker) == answer(owner)
        newest = await mailed_code(mail_sink, email, 2)
        for mail in mail_sink.to(email):
            text = f"{mail['Subject']}\n{body_of(mail)}"
            assert "evil" not in text and "locked" not in text and "\u2028" not in text
        created = await client.post("/api/auth/verify-otp", json={"email": email, "otp": newest})
        assert created.status_code == 201, created.text
        # Two sign-ups, two passwords: the account has none until its owner sets one.
        assert created.json()["data"]["password_required"] is True
        for password in (ATTACKER_PASSWORD, PASSWORD):
            stolen = await client.post(
                "/api/auth/login", json={"email": email, "password": password}
            )
            assert stolen.status_code == 401
        reset_code = await reset_by_mail(client, mail_sink, email, 3)
        mine = await client.post("/api/auth/login", json={"email": email, "password": NEW_PASSWORD})
        assert mine.status_code == 200, mine.text
        tokens = (mine.json()["data"]["token"], mine.json()["data"]["refresh_token"])
    # The run logged at DEBUG: not one hash, password, token or code, from us or a library.
    log = serve.log.read_text()
    assert "gatehouse.access" in log  # the log is the run's
    secrets = ("$argon2id$", PASSWORD, ATTACKER_PASSWORD, NEW_PASSWORD, newest, reset_code)
    for secret in (*secrets, *tokens):
        assert secret not in log


async def test_an_attacker_signing_up_first_never_gets_the_account(
    serve: Serve, mail_sink: MailSink
) -> None:
    email = f"{unique('owner')}@example.com"
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:

        async def login(password: str) -> httpx.Response:
            return await client.post("/api/auth/login", json={"email": email, "password": password})

        attacker = await client.post(
            "/api/auth/register",
            json={
                "name": "Mallory",
                "email": email,
                "password": ATTACKER_PASSWORD,
                "phone": "+14155550199",
            },
        )
        await mailed_code(mail_sink, email, 1)  # to the address: the attacker never sees it
        owner = await client.post(
            "/api/auth/register", json={"name": "Ada", "email": email, "password": PASSWORD}
        )
        assert answer(owner) == answer(attacker)
        code = await mailed_code(mail_sink, email, 2)
        created = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert created.status_code == 201, created.text
        assert created.json()["message"] == SET_PASSWORD
        data = created.json()["data"]
        assert data["password_required"] is True and data["user"]["phone"] is None
        # Before: the owner's code made the account with the attacker's password, and the
        # attacker signed in. Now no password opens it, refused as a wrong one is.
        wrong = await login("Nobody-s-Passw0rd-3141")
        for password in (ATTACKER_PASSWORD, PASSWORD):
            refused = await login(password)
            assert refused.status_code == 401 and answer(refused) == answer(wrong)
        await reset_by_mail(client, mail_sink, email, 3)
        mine = await login(NEW_PASSWORD)
        assert mine.status_code == 200, mine.text
        assert mine.json()["data"]["user"]["id"] == data["user"]["id"]
        assert (await login(ATTACKER_PASSWORD)).status_code == 401


async def test_lockouts_and_refusals_answer_like_an_unknown_account(
    serve: Serve, mail_sink: MailSink
) -> None:
    known = f"{unique('known')}@example.com"
    unknown = f"{unique('nobody')}@example.com"
    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
        await client.post(
            "/api/auth/register", json={"name": "Ada", "email": known, "password": PASSWORD}
        )
        code = await mailed_code(mail_sink, known, 1)
        assert (
            await client.post("/api/auth/verify-otp", json={"email": known, "otp": code})
        ).status_code == 201

        async def reset(email: str, otp: str) -> httpx.Response:
            body = {"email": email, "otp": otp, "new_password": NEW_PASSWORD}
            return await client.post("/api/auth/password/reset", json=body)

        refusals = {}
        for email in (known, unknown):
            await client.post("/api/auth/password/forgot", json={"email": email})
        reset_code = await mailed_code(mail_sink, known, 2)
        for email in (known, unknown):
            for n in range(1, 6):
                start = time.monotonic()
                refusals[email, n] = await reset(email, wrong(reset_code, n))
                assert time.monotonic() - start >= FLOOR_MS / 1000
        assert len({answer(r) for r in refusals.values()}) == 1  # unknown, wrong, spent: alike
        assert refusals[unknown, 1].json()["code"] == "invalid_code"
        # Every wrong try of the hour is spent: the known account now gets no code, and says so
        # exactly as the unknown one does (before: 429 "Too many wrong codes" against 202).
        again = [
            await client.post("/api/auth/password/forgot", json={"email": email})
            for email in (known, unknown)
        ]
        assert again[0].status_code == 202, again[0].text
        assert answer(again[0]) == answer(again[1])
    await asyncio.sleep(3)  # what the courier would have mailed by now
    assert len(mail_sink.to(known)) == 2


async def test_a_stolen_token_cannot_point_sms_recovery_at_the_thiefs_phone(
    serve: Serve, mail_sink: MailSink, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Issue 12, class 2: a thief with a fresh access token sets their phone on the account and
    asks a reset code by SMS. The phone is only pending: the reset finds no account on it, the
    one code the thief gets (the number's) resets nothing, and the owner keeps the account. Once
    the thief confirms the number, the owner's mailbox is told. The run logs no number."""
    from confluent_kafka import Consumer, TopicPartition

    from gatehouse.domain import events
    from gatehouse.domain.crypto import parse_secrets
    from tests.conftest import end_offsets

    thief_phone = "+4477009" + f"{int(time.time() * 1000) % 100_000:05d}"
    email = f"{unique('owner')}@example.com"
    keyring = parse_secrets(json.loads((tmp_path / "secrets.json").read_text())).keyring()
    marks = end_offsets(kafka_bootstrap, events.SEND_OTP)  # this run's commands come after

    def commands_for(key: str, marker: str) -> list[dict[str, object]]:
        """`send-otp` commands keyed `key` since `marks`, up to one with template `marker`:
        the relay publishes in outbox order, so every earlier command is in by then."""
        reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique("reader")})
        reader.assign([TopicPartition(events.SEND_OTP, p, at) for p, at in marks.items()])
        found: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and marker not in [c["template"] for c in found]:
            for record in reader.consume(100, 0.5):
                if record.error() is None and record.key() == key.encode():
                    found.append(json.loads(record.value()))
        reader.close()
        return found

    async with httpx.AsyncClient(base_url=serve.base, timeout=30) as client:
        body = {"name": "Ada", "email": email, "password": PASSWORD}
        assert (await client.post("/api/auth/register", json=body)).status_code == 202
        code = await mailed_code(mail_sink, email, 1)
        made = await client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert made.status_code == 201, made.text
        user_id = made.json()["data"]["user"]["id"]
        signed_in = await client.post(
            "/api/auth/login", json={"email": email, "password": PASSWORD}
        )
        stolen = {"Authorization": f"Bearer {signed_in.json()['data']['token']}"}

        changed = await client.patch(
            "/api/auth/profile", json={"phone": thief_phone}, headers=stolen
        )
        assert changed.status_code == 202, changed.text  # before: 200, the phone set at once
        assert changed.json()["data"]["user"]["phone"] is None
        assert (
            changed.json()["data"]["phone_pending"]
            == thief_phone[:5] + "\u2022" * 3 + thief_phone[-4:]
        )
        sms = {"phone": thief_phone, "channel": "sms"}
        assert (await client.post("/api/auth/password/forgot", json=sms)).status_code == 202
        # The owner's own reset by mail, after it: its command closes this run's commands.
        assert (
            await client.post("/api/auth/password/forgot", json={"email": email})
        ).status_code == 202
        await mailed_code(mail_sink, email, 2)
        sent = await asyncio.to_thread(commands_for, user_id, "password-reset")
        assert [(c["template"], c["channel"]) for c in sent if c["template"] != "verify-email"] == [
            ("verify-phone", "sms"),  # the number's own code, to the number
            ("password-reset", "email"),  # the owner's: no reset code by SMS
        ]
        [to_phone] = [c for c in sent if c["template"] == "verify-phone"]
        assert (
            keyring.decrypt(
                str(to_phone["to_ciphertext"]), events.recipient_context(str(to_phone["id"]))
            )
            == thief_phone
        )
        phone_code = keyring.decrypt(
            str(to_phone["code_ciphertext"]), events.code_context(str(to_phone["id"]))
        )

        # The one code the thief reads resets nothing, by the number or by the address.
        for account in ({"phone": thief_phone}, {"email": email}):
            reset = {**account, "otp": phone_code, "new_password": NEW_PASSWORD}
            refused = await client.post("/api/auth/password/reset", json=reset)
            assert refused.status_code == 400 and refused.json()["code"] == "invalid_code"
        for password, status in ((NEW_PASSWORD, 401), (PASSWORD, 200)):
            login = await client.post(
                "/api/auth/login", json={"email": email, "password": password}
            )
            assert login.status_code == status

        # Holding the phone, the thief can confirm it; the owner hears of it at once.
        confirmed = await client.post(
            "/api/auth/phone/verify", json={"otp": phone_code}, headers=stolen
        )
        assert (
            confirmed.status_code == 200
            and confirmed.json()["data"]["user"]["phone"] == thief_phone
        )
        notice = (await mail_sink.wait_for(email, 3))[2]
        assert notice["Subject"] == "Security notice for your account"
        told = body_of(notice)
        assert "A new phone number was confirmed" in told and thief_phone[-4:] not in told
    log = serve.log.read_text()
    assert thief_phone not in log and thief_phone[1:] not in log and phone_code not in log
