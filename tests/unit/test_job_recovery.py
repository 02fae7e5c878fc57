"""Jobs that run again after their worker died, and failed jobs re-driven: a create-user job
run twice creates one user and succeeds both times; code receipts let only the same job through
again; the secrets of failed jobs are sealed for that job alone; the in-process queue lists and
re-drives its failed jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatehouse.domain.codes import CodeCheck, Purpose
from gatehouse.domain.crypto import Keyring
from gatehouse.jobs.dispatch import handle_job
from gatehouse.jobs.embedded import MemoryJobs
from gatehouse.jobs.job_data import REDACTED, SEALED, redact, seal, unseal
from gatehouse.ports import JobRun
from gatehouse.security.memory import MemoryCodeStore
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration
from tests.fakes import MemoryDatabase

from .helpers import FakeClock, last_code, user_events

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


# --- code receipts ---------------------------------------------------------------------------


async def test_a_receipt_lets_the_same_holder_through_again_and_nobody_else(
    codes: MemoryCodeStore, clock: FakeClock
) -> None:
    await codes.put(REGISTER, "subject", "right", 600, 5)
    assert await codes.check(
        REGISTER, "subject", "right", receipt="r1", receipt_ttl_seconds=60
    ) == (CodeCheck.OK)
    # Spent: without the receipt, or with another one, the code is gone.
    assert await codes.check(REGISTER, "subject", "right") == CodeCheck.MISSING
    assert await codes.check(
        REGISTER, "subject", "right", receipt="r2", receipt_ttl_seconds=60
    ) == (CodeCheck.MISSING)
    # The holder of the receipt passes again, even after a new code was issued to the subject.
    await codes.put(REGISTER, "subject", "newer", 600, 5)
    assert await codes.check(
        REGISTER, "subject", "right", receipt="r1", receipt_ttl_seconds=60
    ) == (CodeCheck.OK)
    assert await codes.check(REGISTER, "subject", "newer") == CodeCheck.OK  # untouched by it
    # A receipt is bound to its purpose and expires.
    assert await codes.check("recovery", "subject", "right", receipt="r1") == CodeCheck.MISSING
    clock.advance(61)
    assert await codes.check(REGISTER, "subject", "right", receipt="r1") == CodeCheck.MISSING


async def test_a_wrong_code_leaves_no_receipt(codes: MemoryCodeStore) -> None:
    await codes.put(REGISTER, "subject", "right", 600, 5)
    wrong = await codes.check(REGISTER, "subject", "wrong", receipt="r1", receipt_ttl_seconds=60)
    assert wrong == CodeCheck.MISMATCH
    assert await codes.check(REGISTER, "subject", "x", receipt="r1") == CodeCheck.MISMATCH


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


# --- the in-process queue's failed set -------------------------------------------------------


async def test_the_memory_queue_lists_failed_jobs_and_re_drives_them_afresh() -> None:
    jobs = MemoryJobs(attempts=2, backoff_ms=1)
    runs: list[tuple[str, int, Any]] = []
    broken = True

    async def process(run: JobRun) -> dict[str, Any]:
        runs.append((run.id, run.attempt, run.data))
        if broken:
            raise ConnectionError("database away")
        return {"success": True, "message": "ok", "data": {}}

    stop = asyncio.Event()
    working = asyncio.ensure_future(jobs.work(["q"], process, stop, 2))
    try:
        first = await jobs.submit("q", "x", {"password": PASSWORD}, job_id="job-a")
        second = await jobs.submit("q", "x", {"n": 2}, job_id="job-b")
        async with asyncio.timeout(10):
            while len(await jobs.failed("q")) < 2:
                await asyncio.sleep(0.001)
        failed = await jobs.failed("q")
        assert {f.id for f in failed} == {first, second}
        assert all(f.attempts_made == 2 and f.failed_reason == "database away" for f in failed)
        assert all(f.finished_at is not None for f in failed)
        assert await jobs.failed("other") == [] and len(await jobs.failed("q", 1)) == 1

        broken = False
        assert await jobs.retry("q", [first, "no-such-job"]) == [first]
        async with asyncio.timeout(10):
            while (state := await jobs.get("q", first)) and state.state != "completed":
                await asyncio.sleep(0.001)
        assert state is not None and state.attempts_made == 1  # a fresh set of attempts
        assert runs[-1] == (first, 1, {"password": PASSWORD})  # with its data
        assert await jobs.retry("q", [first]) == []  # completed: nothing to re-drive
        assert await jobs.retry("q") == [second]
        async with asyncio.timeout(10):
            while (state := await jobs.get("q", second)) and state.state != "completed":
                await asyncio.sleep(0.001)
        assert await jobs.failed("q") == []
    finally:
        stop.set()
        await asyncio.wait_for(working, 10)
