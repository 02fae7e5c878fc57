"""Issue 12's attacks on sign-up and recovery, run as the attacker ran them: enumeration through
lockouts and the reset's timing, a second sign-up taking over a pending one, a phishing name in
the verification mail, and hashes in the library loggers at DEBUG."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from gatehouse.courier.channels.smtp import SmtpChannel, fast_bytes
from gatehouse.courier.templates import TEXT_MAX, Templates, plain_text
from gatehouse.domain import events
from gatehouse.domain.users import NO_PASSWORD, PendingRegistration
from gatehouse.errors import InvalidCode, InvalidCredentials
from gatehouse.jobs.dispatch import handle_job
from gatehouse.observability import logs
from gatehouse.ports import OutgoingMessage
from gatehouse.security.hashing import Argon2Hasher
from gatehouse.selfservice.context import FlowContext, Policy
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.registration import flow as registration
from tests.fakes import MemoryDatabase

from .api_client import Api
from .helpers import FakeClock, code_in, deliveries, last_code, other_code

OWNER = "ada@example.com"
UNKNOWN = "nobody@example.com"
PASSWORD = "correct horse battery"
ATTACKER_PASSWORD = "mallory's own password"
NEW_PASSWORD = "a brand new password"
# Headers that differ between any two answers, whoever asks.
VARYING = {"x-request-id", "date"}


def answer(response: httpx.Response, email: str = "") -> tuple[int, str, dict[str, str]]:
    """Status, body and headers, the address echoed in the body replaced: what must be equal."""
    body = response.text.replace(email, "<email>") if email else response.text
    # With the address masked, the body's length is compared through the body itself.
    varying = VARYING | {"content-length"} if email else VARYING
    headers = {k: v for k, v in response.headers.items() if k.lower() not in varying}
    return response.status_code, body, headers


async def wrong_codes(api: Api, email: str) -> list[str]:
    """As many codes as a code has tries, none of them the last one mailed to `email`."""
    real = ((await api.sent_codes(email)) or ["000000"])[-1]
    return [other_code(real, n) for n in range(1, api.services.ctx.policy.code_attempts + 1)]


async def exhaust_reset_code(api: Api, email: str) -> None:
    """A code asked for `email`, then every try of the window spent on wrong codes."""
    forgot = await api.post("/api/auth/password/forgot", {"email": email})
    assert forgot.status_code == 202
    for wrong in await wrong_codes(api, email):
        refused = await api.post(
            "/api/auth/password/reset", {"email": email, "otp": wrong, "new_password": NEW_PASSWORD}
        )
        assert refused.status_code == 400, refused.text


# --- 5. enumeration through side doors -------------------------------------------------------


async def test_forgot_password_after_wrong_codes_answers_as_for_an_unknown_email(api: Api) -> None:
    await api.signed_up(OWNER)
    sent_before = len(await api.sent_codes(OWNER))
    await exhaust_reset_code(api, OWNER)
    await exhaust_reset_code(api, UNKNOWN)
    assert len(await api.sent_codes(OWNER)) == sent_before + 1  # the first forgot's code
    known = await api.post("/api/auth/password/forgot", {"email": OWNER})
    unknown = await api.post("/api/auth/password/forgot", {"email": UNKNOWN})
    # Before: 429 "Too many wrong codes" for the registered email, 202 for the unknown one.
    assert known.status_code == 202, known.text
    assert answer(known) == answer(unknown)
    assert len(await api.sent_codes(OWNER)) == sent_before + 1  # and no code for the locked one


async def test_register_after_wrong_codes_answers_as_for_an_existing_account(api: Api) -> None:
    await api.signed_up(OWNER)
    pending = "new@example.com"
    body = {"name": "Eve", "email": pending, "password": ATTACKER_PASSWORD}
    assert (await api.post("/api/auth/register", body)).status_code == 202
    for wrong in await wrong_codes(api, pending):
        refused = await api.post("/api/auth/verify-otp", {"email": pending, "otp": wrong})
        assert refused.status_code == 400
    again = await api.post("/api/auth/register", body)
    existing = await api.post("/api/auth/register", {**body, "email": OWNER})
    # Before: 429 for the address with a locked sign-up, 202 for the one with an account.
    assert again.status_code == 202, again.text
    assert answer(again, pending) == answer(existing, OWNER)
    resent = await api.post("/api/auth/resend-otp", {"email": pending})
    nothing = await api.post("/api/auth/resend-otp", {"email": UNKNOWN})
    assert answer(resent, pending) == answer(nothing, UNKNOWN)


async def test_reset_refuses_unknown_wrong_and_locked_alike(api: Api) -> None:
    await api.signed_up(OWNER)
    locked = "locked@example.com"
    await api.signed_up(locked)
    await exhaust_reset_code(api, locked)
    await api.post("/api/auth/password/forgot", {"email": OWNER})
    [code] = (await api.sent_codes(OWNER))[-1:]

    async def reset(email: str, otp: str) -> httpx.Response:
        body = {"email": email, "otp": otp, "new_password": NEW_PASSWORD}
        return await api.post("/api/auth/password/reset", body)

    unknown = await reset(UNKNOWN, "123456")
    wrong = await reset(OWNER, other_code(code))
    spent = await reset(locked, "123456")
    assert unknown.status_code == 400 and unknown.json()["code"] == "invalid_code"
    assert answer(unknown) == answer(wrong) == answer(spent)


async def test_reset_refusals_wait_for_the_answer_floor(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    floor = timedelta(milliseconds=120)
    floored = dataclasses.replace(ctx, policy=dataclasses.replace(ctx.policy, answer_floor=floor))
    await registration.register(ctx, name="Ada", email=OWNER, password=PASSWORD)
    await registration.verify(ctx, email=OWNER, otp=last_code(db, ctx.keyring, OWNER))
    await recovery.request(ctx, email=OWNER)
    code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    for email, otp in ((UNKNOWN, "123456"), (OWNER, other_code(code))):
        start = time.monotonic()
        with pytest.raises(InvalidCode):  # before: the unknown account's came back at once
            await recovery.reset(floored, email=email, otp=otp, new_password=NEW_PASSWORD)
        assert time.monotonic() - start >= floor.total_seconds()


# --- 6. a second sign-up takes over a pending one --------------------------------------------


ATTACKER_PHONE = "+14155550199"
SET_PASSWORD = "Email verified; set a password with password recovery"


async def sign_up(api: Api, name: str, password: str, phone: str | None = None) -> httpx.Response:
    body = {"name": name, "email": OWNER, "password": password}
    return await api.post("/api/auth/register", {**body, "phone": phone} if phone else body)


async def login(api: Api, password: str) -> httpx.Response:
    return await api.post("/api/auth/login", {"email": OWNER, "password": password})


async def owner_resets(api: Api) -> None:
    """The owner, who reads the address's mail, sets a password through recovery."""
    forgot = await api.post("/api/auth/password/forgot", {"email": OWNER})
    assert forgot.status_code == 202, forgot.text
    [code] = (await api.sent_codes(OWNER))[-1:]
    body = {"email": OWNER, "otp": code, "new_password": NEW_PASSWORD}
    reset = await api.post("/api/auth/password/reset", body)
    assert reset.status_code == 200, reset.text


async def contested_account(api: Api) -> dict[str, Any]:
    """verify-otp with the newest code: the account made from a contested sign-up."""
    [newest] = (await api.sent_codes(OWNER))[-1:]
    verified = await api.post("/api/auth/verify-otp", {"email": OWNER, "otp": newest})
    assert verified.status_code == 201, verified.text
    assert verified.json()["message"] == SET_PASSWORD
    data: dict[str, Any] = verified.json()["data"]
    assert data["password_required"] is True
    # Neither sign-up's name (anyone's text) nor phone (a recovery channel): the address's own.
    assert (data["user"]["name"], data["user"]["phone"]) == ("ada", None)
    return data


async def test_an_attacker_signing_up_first_never_gets_the_account(api: Api) -> None:
    attacker = await sign_up(api, "Mallory", ATTACKER_PASSWORD, ATTACKER_PHONE)
    api.clock.advance(60)
    owner = await sign_up(api, "Ada", PASSWORD)
    assert answer(owner) == answer(attacker)  # nobody learns the sign-up is now contested
    user = (await contested_account(api))["user"]
    # Before: the owner's code made the account with the attacker's password; the attacker
    # then signed in with it. Now no password opens it, refused as a wrong password is.
    wrong = await login(api, "not anyone's password")
    for password in (ATTACKER_PASSWORD, PASSWORD):
        refused = await login(api, password)
        assert refused.status_code == 401 and answer(refused) == answer(wrong)
    # The attacker's phone never reached the account: a reset by SMS to it finds nothing.
    sms = {"phone": ATTACKER_PHONE, "channel": "sms"}
    assert (await api.post("/api/auth/password/forgot", sms)).status_code == 202
    await owner_resets(api)
    assert (await login(api, NEW_PASSWORD)).json()["data"]["user"]["id"] == user["id"]
    assert (await login(api, ATTACKER_PASSWORD)).status_code == 401
    assert (await api.counts())["users"] == 1
    assert api.services.bus is not None
    sent = [json.loads(r.value) for r in api.services.bus.published if r.topic == events.SEND_OTP]
    assert {c["channel"] for c in sent} == {"email"}  # not one SMS


async def test_a_second_sign_up_cannot_take_over_a_pending_one(api: Api) -> None:
    owner = await sign_up(api, "Ada", PASSWORD)
    api.clock.advance(60)
    attacker = await sign_up(api, "Mallory", ATTACKER_PASSWORD, ATTACKER_PHONE)
    assert answer(attacker) == answer(owner)  # the attacker learns nothing
    user = (await contested_account(api))["user"]
    # Before: the account was created with the attacker's password. Nobody can tell which of
    # the two is the address's owner, so neither password opens it; the owner resets.
    assert (await login(api, ATTACKER_PASSWORD)).status_code == 401
    assert (await login(api, PASSWORD)).status_code == 401
    await owner_resets(api)
    assert (await login(api, NEW_PASSWORD)).json()["data"]["user"]["id"] == user["id"]


async def test_a_second_sign_up_with_the_same_password_changes_nothing(api: Api) -> None:
    await sign_up(api, "Ada", PASSWORD)
    api.clock.advance(60)
    await sign_up(api, "Ada Lovelace", PASSWORD, ATTACKER_PHONE)  # a double submit, say
    [newest] = (await api.sent_codes(OWNER))[-1:]
    verified = await api.post("/api/auth/verify-otp", {"email": OWNER, "otp": newest})
    assert verified.status_code == 201, verified.text
    assert verified.json()["message"] == "Email verified; account created"
    data = verified.json()["data"]
    assert data["password_required"] is False
    assert (data["user"]["name"], data["user"]["phone"]) == ("Ada", None)  # the first's
    assert (await api.logged_in(OWNER))["user"]["id"] == data["user"]["id"]


async def test_a_code_finishes_only_the_sign_up_it_was_issued_for(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    short = dataclasses.replace(ctx, policy=Policy(pending_ttl=timedelta(minutes=1)))
    await registration.register(short, name="Ada", email=OWNER, password=PASSWORD)
    code = last_code(db, ctx.keyring, OWNER)
    clock.advance(90)  # that sign-up has ended; its code (10 minutes) has not
    other = dataclasses.replace(db.tables.pending[OWNER], id=events.new_id())
    other = dataclasses.replace(other, expires_at=clock.now + timedelta(hours=1))
    await _put(db, other)  # another sign-up of the address, whose own code was never sent
    with pytest.raises(InvalidCode):
        await registration.verify(ctx, email=OWNER, otp=code)
    assert db.tables.users == {}


async def _put(db: MemoryDatabase, pending: PendingRegistration) -> None:
    async with db.uow() as uow:
        await uow.pending.put(pending)
        await uow.commit()


def create_job(code: str, password: str) -> dict[str, Any]:
    return {"email": OWNER, "otp": code, "password": password, "name": "Mallory"}


async def test_a_create_user_job_finishes_a_pending_sign_up_only_with_its_password(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    await registration.register(ctx, name="Ada", email=OWNER, password=PASSWORD)
    code = last_code(db, ctx.keyring, OWNER)
    forged = await handle_job(
        ctx, "create-user", "create-user", create_job(code, ATTACKER_PASSWORD)
    )
    assert forged["success"] is False and forged["code"] == "invalid_code"
    assert db.tables.users == {}
    # The code a forged job spent is the owner's to ask again; a job with the sign-up's password
    # finishes it (the verification queue's code, bound to the live sign-up as well).
    sent = await handle_job(
        ctx,
        "verification",
        "verification",
        {"channel": "email", "to": OWNER, "purpose": "register"},
    )
    assert sent["success"] is True
    assert deliveries(db)[-1].key == db.tables.pending[OWNER].id
    code = last_code(db, ctx.keyring, OWNER)
    created = await handle_job(ctx, "create-user", "create-user", create_job(code, PASSWORD))
    assert created["success"] is True, created
    await login_flow.login(ctx, email=OWNER, password=PASSWORD)


async def test_a_create_user_job_on_a_contested_sign_up_makes_no_password(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    await registration.register(
        ctx, name="Mallory", email=OWNER, password=ATTACKER_PASSWORD, phone=ATTACKER_PHONE
    )
    await registration.register(ctx, name="Ada", email=OWNER, password=PASSWORD)
    code = last_code(db, ctx.keyring, OWNER)
    job = {**create_job(code, PASSWORD), "name": "Ada"}
    created = await handle_job(ctx, "create-user", "create-user", job, "job-1")
    assert created["success"] is True, created
    assert created["message"] == "User created; set a password with password recovery"
    assert created["data"]["password_required"] is True
    [user] = db.tables.users.values()
    assert (user.name, user.phone_index, user.password_hash) == ("Ada", None, NO_PASSWORD)
    # The job run again (its worker died after the commit) finds that account; the same job
    # id with other details does not.
    again = await handle_job(ctx, "create-user", "create-user", job, "job-1")
    assert again["success"] is True and again["data"] == created["data"], again
    forged = {**job, "name": "Mallory", "password": ATTACKER_PASSWORD}
    refused = await handle_job(ctx, "create-user", "create-user", forged, "job-1")
    assert refused["success"] is False and refused["code"] == "conflict"
    for password in (PASSWORD, ATTACKER_PASSWORD):
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email=OWNER, password=password)
    await recovery.request(ctx, email=OWNER)
    reset_code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    await recovery.reset(ctx, email=OWNER, otp=reset_code, new_password=NEW_PASSWORD)
    assert (await login_flow.login(ctx, email=OWNER, password=NEW_PASSWORD)).user["id"] == user.id


class ArgonOps:
    """Stands for an `Argon2Hasher`'s argon2 and counts its operations (a hash or a check, each
    one argon2 computation), whichever method of the hasher asked for them."""

    def __init__(self, argon: Any) -> None:
        self._argon = argon
        self.count = 0

    def hash(self, password: str) -> str:
        self.count += 1
        return str(self._argon.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self.count += 1
        return bool(self._argon.verify(password_hash, password))

    def check_needs_rehash(self, password_hash: str) -> bool:
        return bool(self._argon.check_needs_rehash(password_hash))


@pytest.fixture
def argon_ops(hasher: Argon2Hasher, monkeypatch: pytest.MonkeyPatch) -> ArgonOps:
    spy = ArgonOps(hasher._argon)
    monkeypatch.setattr(hasher, "_argon", spy)
    return spy


async def test_every_sign_up_path_costs_one_argon2_operation(
    ctx: FlowContext, db: MemoryDatabase, argon_ops: ArgonOps
) -> None:
    async def ops(email: str, password: str) -> int:
        before = argon_ops.count
        await registration.register(ctx, name="Eve", email=email, password=password)
        return argon_ops.count - before

    await registration.register(ctx, name="Ada", email=UNKNOWN, password=PASSWORD)
    await registration.verify(ctx, email=UNKNOWN, otp=last_code(db, ctx.keyring, UNKNOWN))
    costs = {
        "new": await ops(OWNER, PASSWORD),
        "same password": await ops(OWNER, PASSWORD),
        "other password": await ops(OWNER, ATTACKER_PASSWORD),  # contests it
        "contested": await ops(OWNER, PASSWORD),
        "account": await ops(UNKNOWN, PASSWORD),
    }
    assert db.tables.pending[OWNER].password_hash == NO_PASSWORD
    assert set(costs.values()) == {1}, costs


async def test_an_account_without_a_password_refuses_as_a_wrong_password_does(
    ctx: FlowContext, db: MemoryDatabase, hasher: Argon2Hasher, argon_ops: ArgonOps
) -> None:
    for password in (PASSWORD, "gatehouse-decoy-password", ""):  # the decoy's own too
        before = argon_ops.count
        assert await hasher.verify(NO_PASSWORD, password) == (False, False)
        assert argon_ops.count - before == 1  # a real check's work, not an early no
    await registration.register(ctx, name="Ada", email=OWNER, password=PASSWORD)
    await registration.verify(ctx, email=OWNER, otp=last_code(db, ctx.keyring, OWNER))
    await registration.register(ctx, name="Ada", email=UNKNOWN, password=ATTACKER_PASSWORD)
    await registration.register(ctx, name="Eve", email=UNKNOWN, password=PASSWORD)
    await registration.verify(ctx, email=UNKNOWN, otp=last_code(db, ctx.keyring, UNKNOWN))
    refusals = []
    for email, password in ((OWNER, ATTACKER_PASSWORD), (UNKNOWN, PASSWORD), ("x@y.z", PASSWORD)):
        before = argon_ops.count
        with pytest.raises(InvalidCredentials) as refused:
            await login_flow.login(ctx, email=email, password=password)
        assert argon_ops.count - before == 1
        refusals.append((type(refused.value), refused.value.code, refused.value.message))
    assert len(set(refusals)) == 1  # wrong password, no password, unknown account: alike


# --- 8. user text in mail ---------------------------------------------------------------------

PHISHING = "Ada\u2028\u2028Your account is locked. Confirm at https://evil.example/login today"


async def test_the_name_chosen_at_sign_up_never_reaches_the_verification_mail(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    await registration.register(ctx, name=PHISHING, email=OWNER, password=PASSWORD)
    [command] = deliveries(db, "verify-email")
    assert "name" not in command.payload["variables"]
    variables = {**command.payload["variables"], "code": code_in(ctx.keyring, command.payload)}
    subject, body = Templates().render("verify-email", variables)
    for text in (subject, body):
        assert "evil" not in text and "locked" not in text and "\u2028" not in text


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("Zoë O'Brien-Smith", "Zoë O'Brien-Smith"),
        ("J.R.R. Tolkien", "J.R.R. Tolkien"),
        ("Dr. Who", "Dr. Who"),
        (PHISHING, "Ada Your account is locked. Confirm at today"),
        ("Ada\r\nBcc: eve@example.com", "Ada Bcc:"),
        ("a\x0bb\x0cc\x85d\u2029e\x00f", "a b c d e f"),
        ("evil.example/login", ""),
        ("visit evil.example", "visit"),
        ("www.evil", ""),
        ("ｅｖｉｌ．ｅｘａｍｐｌｅ", ""),  # fullwidth: a domain once folded
        ("evil\u3002example", ""),  # the ideographic full stop is a dot to IDNA
        ("10.0.0.1", ""),
        ("mailto:eve", ""),
        ("javascript:alert(1)", ""),
        ("hxxp:\\\\evil", ""),
        ("\u202eelpmaxe.live", ""),  # a bidi override reversing a domain into view
        ("x" * 500, "x" * TEXT_MAX),
    ],
)
def test_user_text_renders_as_one_plain_line_without_links(given: str, shown: str) -> None:
    assert plain_text(given) == shown


def test_every_variable_goes_through_the_sanitiser() -> None:
    subject, body = Templates().render(
        "password-reset", {"code": "123456", "minutes": "10\r\nBcc: eve@example.com evil.example"}
    )
    assert "It expires in 10 Bcc: minutes." in body
    assert "eve@" not in body and "evil" not in body and "\n" not in subject


def test_a_subject_cannot_carry_a_header() -> None:
    injected = OutgoingMessage("m1", "email", OWNER, "Code\r\nBcc: eve@example.com", "x\n")
    assert fast_bytes("Gatehouse <no-reply@gatehouse.local>", injected, "<id@gatehouse>") is None
    with pytest.raises(ValueError):  # the email package refuses a header with a line break
        SmtpChannel("smtp://127.0.0.1:25", "no-reply@gatehouse.local")._mail(injected, "<id@g>")


# --- 8. library loggers at DEBUG ------------------------------------------------------------


@pytest.fixture
def debug_logs() -> Iterator[list[logging.LogRecord]]:
    """Logging configured at DEBUG as `GATEHOUSE_LOG_LEVEL=DEBUG` does, every record kept."""
    root = logging.getLogger()
    names = ("uvicorn.access", *logs.LIBRARY_LOGGERS, *logs.STATEMENT_LOGGERS)
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names})
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logs.configure("DEBUG")
    root.addHandler(Keep(logging.DEBUG))
    try:
        yield records
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)


async def test_a_debug_run_logs_no_hash_password_token_or_code(
    api: Api, debug_logs: list[logging.LogRecord]
) -> None:
    await api.post("/api/auth/register", {"name": "Ada", "email": OWNER, "password": PASSWORD})
    [code] = await api.sent_codes(OWNER)
    assert (
        await api.post("/api/auth/verify-otp", {"email": OWNER, "otp": code})
    ).status_code == 201
    opened = await api.logged_in(OWNER)
    await api.post("/api/auth/refresh", {"refresh_token": opened["refresh_token"]})
    assert debug_logs  # the run did log (the app's own DEBUG lines at least)
    secrets = ("$argon2id$", PASSWORD, code, opened["token"], opened["refresh_token"])
    for record in debug_logs:
        text = f"{record.name} {record.getMessage()} {record.args!r}"
        assert not [s for s in secrets if s in text], text[:300]


@pytest.mark.parametrize(
    ("name", "level", "kept"),
    [
        ("gatehouse.selfservice", logging.DEBUG, True),
        ("gatehouse", logging.DEBUG, True),
        ("aiosqlite", logging.DEBUG, False),
        ("some.library.nobody.listed", logging.DEBUG, False),
        ("some.library.nobody.listed", logging.INFO, True),
        ("sqlalchemy.engine.Engine", logging.INFO, False),  # a statement and its parameters
        ("sqlalchemy.engine.Engine", logging.WARNING, True),
        ("gatehousex", logging.DEBUG, False),
    ],
)
def test_the_handler_drops_library_debug_and_statements_set_below_their_cap(
    name: str, level: int, kept: bool
) -> None:
    record = logging.LogRecord(name, level, __file__, 1, "x %s", ("$argon2id$...",), None)
    assert logs.OwnDebugOnly().filter(record) is kept
