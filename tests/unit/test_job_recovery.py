"""Jobs that run again after their worker died, and failed jobs re-driven: a create-user job
run twice creates one user and succeeds both times; the secrets of failed jobs are sealed for that
job alone. (Code receipts, and the failed set of every job queue: tests/contract/.)"""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.domain.codes import CodeCheck, Purpose
from gatehouse.domain.crypto import Keyring
from gatehouse.jobs.dispatch import handle_job
from gatehouse.jobs.job_data import REDACTED, SEALED, redact, seal, unseal
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration
from tests.fakes import MemoryDatabase

from .helpers import last_code, user_events

PASSWORD = "correct horse battery staple"
EMAIL = "ada@example.com"
REGISTER = Purpose.REGISTER.value


async def signup_code(ctx: FlowContext, db: MemoryDatabase, email: str = EMAIL) -> str:
    sent = await handle_job(
        ctx,
        "verification",
        "verification",
        {"channel": "email", "to": email, "purpose": "register"},
    )
    assert sent["success"] is True, sent
    return last_code(db, ctx.keyring, email)


def create_data(code: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"email": EMAIL, "otp": code, "password": password, "name": "Ada"}


# --- create-user run again -------------------------------------------------------------------


async def test_a_create_user_job_run_again_after_its_commit_succeeds_with_the_same_user(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    code = await signup_code(ctx, db)
    first = await handle_job(ctx, "create-user", "create-user", create_data(code), "job-1")
    assert first["success"] is True, first
    # The worker died before the queue marked the job completed: the queue runs it again.
    again = await handle_job(ctx, "create-user", "create-user", create_data(code), "job-1")
    assert again["success"] is True, again
    assert again["data"]["user"]["id"] == first["data"]["user"]["id"]
    assert again["data"]["user"] == first["data"]["user"]
    assert len(db.tables.users) == 1
    assert len(user_events(db, "gatehouse.user.verified")) == 1  # no second event either
    # Another job with the same (spent) code is refused as before.
    other = await handle_job(ctx, "create-user", "create-user", create_data(code), "job-2")
    assert other["success"] is False and other["code"] == "invalid_code"
    # And so is the same job id from a producer that does not know the password.
    forged = await handle_job(
        ctx, "create-user", "create-user", create_data(code, "another password 123"), "job-1"
    )
    assert forged["success"] is False and forged["code"] == "conflict"
    assert len(db.tables.users) == 1


async def test_a_create_user_job_killed_between_its_code_check_and_its_commit_runs_again(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    code = await signup_code(ctx, db)
    # What the first run did before its worker was killed: spend the code, leaving a receipt.
    receipt = ctx.code_receipt(REGISTER, EMAIL, code, "create-user:job-1")
    subject = ctx.code_subject(REGISTER, EMAIL)
    code_hash = ctx.code_hash(REGISTER, EMAIL, code)
    checked = await ctx.codes.check(
        REGISTER, subject, code_hash, receipt=receipt, receipt_ttl_seconds=600
    )
    assert checked == CodeCheck.OK and db.tables.users == {}
    again = await handle_job(ctx, "create-user", "create-user", create_data(code), "job-1")
    assert again["success"] is True, again
    assert len(db.tables.users) == 1


async def test_without_a_job_a_second_create_with_the_spent_code_is_refused(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    code = await signup_code(ctx, db)
    await registration.create_user(ctx, email=EMAIL, otp=code, password=PASSWORD, name="Ada")
    with pytest.raises(Exception, match="Invalid or expired"):
        await registration.create_user(ctx, email=EMAIL, otp=code, password=PASSWORD, name="Ada")


# --- secrets of failed jobs ------------------------------------------------------------------


def test_failed_job_secrets_are_sealed_for_that_job_alone(service_secrets: Any) -> None:
    keyring: Keyring = service_secrets.keyring()
    data = {"email": EMAIL, "password": PASSWORD, "nested": {"token": "eyJ.x.y"}, "n": [1]}
    sealed = seal(data, keyring, "create-user", "job-1")
    assert sealed["email"] == EMAIL and sealed["n"] == [1]
    assert sealed["password"].startswith(SEALED) and PASSWORD not in str(sealed)
    assert sealed["nested"]["token"].startswith(SEALED)
    assert seal(sealed, keyring, "create-user", "job-1") == sealed  # sealed once, not twice
    assert unseal(sealed, keyring, "create-user", "job-1") == data
    # Moved to another job or queue, the ciphertexts do not open: they stay sealed.
    assert unseal(sealed, keyring, "create-user", "job-2")["password"] == sealed["password"]
    assert unseal(sealed, keyring, "verify-user", "job-1")["password"] == sealed["password"]
    # A completed job blanks them, sealed or not.
    assert redact(sealed)["password"] == REDACTED == redact(data)["nested"]["token"]


def test_data_with_nothing_sealed_is_run_as_given(service_secrets: Any) -> None:
    """Every first run: no copy of the data is made, and a secret field that merely looks like
    a ciphertext outside the secret fields is left alone."""
    keyring: Keyring = service_secrets.keyring()
    data = {"email": EMAIL, "password": PASSWORD, "note": SEALED + "not a secret field"}
    assert unseal(data, keyring, "create-user", "job-1") is data
    nested = {"items": [{"token": seal({"token": "t"}, keyring, "q", "j")["token"]}]}
    assert unseal(nested, keyring, "q", "j") == {"items": [{"token": "t"}]}
