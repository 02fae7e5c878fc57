"""The audit chain itself (domain/audit.py): records linked by their hashes, and the first place
a removed, altered or moved record breaks the chain; the checkpoint verification starts from,
and the scrubbing of free text. Then the flows' records on the unit suite's fakes: written in
the change's transaction, refusals kept when it rolls back, the client address of the request,
and never a secret or a phone number among them (planted values, searched for)."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.admin import audit as admin_audit
from gatehouse.domain.audit import (
    GENESIS,
    REDACTED,
    AuditRecord,
    ChainCheck,
    ChainHead,
    chain,
    entry,
    iso,
    link_hash,
    scrub,
    waiting,
)
from gatehouse.errors import InvalidCode, InvalidCredentials, InvalidToken
from gatehouse.selfservice.audit import client_address, record, refused
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.sessions import rotation as session
from tests.fakes import MemoryDatabase
from tests.fakes_audit import MemoryAuditStore

from .helpers import FakeClock, code_in, deliveries, other_code
from .test_flows_session import PASSWORD, make_account

T0 = datetime(2026, 12, 3, 9, 0, 0, 123456, tzinfo=UTC)


def records(n: int) -> list[AuditRecord]:
    written = [
        waiting(
            100 + i,
            entry(
                T0 + timedelta(seconds=i), "login", "success", user_id=f"u-{i % 3}", factor="pwd"
            ),
        )
        for i in range(n)
    ]
    assert all(r.seq is None and r.hash is None for r in written)
    return chain(ChainHead(0, GENESIS), written)


def first_break(found: list[AuditRecord], head: ChainHead | None = None) -> str | None:
    check = ChainCheck()
    for r in found:
        check.feed(r)
    last = ChainHead(found[-1].seq or 0, found[-1].hash or "") if found else ChainHead(0, GENESIS)
    broken = check.finish(head or last)
    return None if broken is None else f"{broken.seq} {broken.problem}"


def test_each_record_holds_the_hash_of_the_one_before_and_its_own() -> None:
    chained = records(5)
    assert [r.seq for r in chained] == [1, 2, 3, 4, 5]
    assert chained[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(chained):
        assert after.prev_hash == before.hash and after.seq is not None
        assert after.hash == link_hash(before.hash or "", after.seq, after)
    assert first_break(chained) is None


def test_an_altered_removed_or_moved_record_is_the_first_broken_link() -> None:
    chained = records(6)
    head = ChainHead(6, chained[-1].hash or "")
    altered = [*chained[:2], replace(chained[2], outcome="failure"), *chained[3:]]
    assert first_break(altered, head) == "3 altered"
    # Edited and re-hashed (a careful forger): the next record no longer follows it.
    forged = replace(chained[2], user_id="u-other")
    forged = replace(forged, hash=link_hash(forged.prev_hash or "", 3, forged))
    assert first_break([*chained[:2], forged, *chained[3:]], head) == "4 broken_link"
    assert first_break([*chained[:3], *chained[4:]], head) == "4 missing"
    swapped = [*chained[:2], replace(chained[3], seq=3), replace(chained[2], seq=4), *chained[4:]]
    assert first_break(swapped, head) == "3 altered"
    # The newest records removed: only the head knows there were more.
    assert first_break(chained[:4], head) == "5 missing"
    assert first_break(chained, ChainHead(6, "f" * 64)) == "6 head_mismatch"
    assert first_break([*chained[:2], replace(chained[2], hash=None)], head) == "3 altered"


def test_verification_starts_at_the_checkpoint_retention_left() -> None:
    chained = records(6)
    check = ChainCheck(ChainHead(3, chained[2].hash or ""))
    for r in chained[3:]:
        assert check.feed(r) is None
    assert check.finish(ChainHead(6, chained[-1].hash or "")) is None and check.count == 3
    wrong_start = ChainCheck(ChainHead(3, "e" * 64))
    assert wrong_start.feed(chained[3]) is not None


def test_free_text_loses_codes_phone_numbers_and_tokens() -> None:
    planted = "code 493027 sent to +1 (415) 555-0123, token eyJhbGciOiJFZERTQSJ9.eyJzdWIi0"
    cleaned = scrub(planted)
    assert cleaned is not None
    for secret in ("493027", "415", "555-0123", "eyJhbGciOiJFZERTQSJ9"):
        assert secret not in cleaned
    assert cleaned.count(REDACTED) == 3
    assert scrub("reuse_detected_family_revoked") == "reuse_detected_family_revoked"
    assert len(scrub("x" * 500) or "") == 200
    with pytest.raises(ValueError, match="naive"):
        entry(datetime(2026, 1, 1), "login", "success")
    with pytest.raises(ValueError, match="actor"):
        entry(T0, "login", "success", actor="robot")


# --- the flows' records, on the fakes ---------------------------------------------------------


def trail(db: MemoryDatabase) -> list[tuple[str, str, str | None, str | None]]:
    return [(r.action, r.outcome, r.user_id, r.detail) for r in db.tables.audit]


async def test_a_record_commits_with_its_change_and_a_refusal_even_without_it(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    async with ctx.uow() as uow:
        record(ctx, uow, "account.update", user_id="u-1")
        refused(ctx, uow, "refresh", user_id="u-1", reason="revoked")
        # no commit: the change and its record go, the refusal stays
    assert trail(db) == [("refresh", "failure", "u-1", "revoked")]
    async with ctx.uow() as uow:
        record(ctx, uow, "account.update", user_id="u-1")
        await uow.commit()
    store = MemoryAuditStore(db)
    assert [r.seq for r in db.tables.audit] == [None, None]  # written, not linked yet
    waiting_now = await admin_audit.verify(store)
    assert waiting_now.ok and (waiting_now.count, waiting_now.waiting) == (0, 2)
    assert await store.chain(1) == 1 and await store.chain(10) == 1
    assert [r.seq for r in db.tables.audit] == [1, 2]
    verdict = await admin_audit.verify(store)
    assert verdict.ok and (verdict.count, verdict.waiting) == (2, 0)


async def test_sign_ins_refusals_and_changes_are_recorded_with_the_client_address(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    account = await make_account(ctx, db)
    token = client_address.set("203.0.113.9")
    try:
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email="nobody@example.com", password=PASSWORD)
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email=account.email, password="wrong password!")
        opened = await login_flow.login(ctx, email=account.email, password=PASSWORD)
        refreshed = await session.refresh(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):  # reuse: the family is revoked
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):  # and its newest token is refused, recorded
            await session.refresh(ctx, refresh_token=refreshed.refresh_token)
    finally:
        client_address.reset(token)
    assert trail(db) == [
        ("account.create", "success", account.id, None),
        ("login", "failure", None, "unknown_account"),
        ("login", "failure", account.id, "wrong_password"),
        ("login", "success", account.id, None),
        ("refresh", "success", account.id, None),
        ("refresh", "failure", account.id, "reuse_detected_family_revoked"),
        ("refresh", "failure", account.id, "revoked"),
    ]
    addresses = [r.client_address for r in db.tables.audit]
    assert addresses == [None] + ["203.0.113.9"] * 6  # sign-up ran outside the "request"
    assert {r.actor for r in db.tables.audit} == {"user"}
    assert db.tables.audit[3].actor_id == account.id and db.tables.audit[3].factor == "password"
    store = MemoryAuditStore(db)
    assert await store.chain(100) == 7
    assert (await admin_audit.verify(store)).count == 7


async def test_no_secret_or_phone_number_reaches_a_record(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    phone = "+14155550123"
    account = await make_account(ctx, db, phone=phone)
    opened = await login_flow.login(ctx, email=account.email, password=PASSWORD)
    await profile.update(ctx, token=opened.token, name="Ada L.")
    await recovery.request(ctx, email=account.email)
    code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    with pytest.raises(InvalidCode):  # a wrong reset code of a known account: recorded
        await recovery.reset(ctx, email=account.email, otp=other_code(code), new_password="n" * 12)
    await recovery.reset(ctx, email=account.email, otp=code, new_password="a new long passphrase")
    planted = (PASSWORD, "a new long passphrase", code, other_code(code), opened.token)
    every = json.dumps([asdict(r) for r in db.tables.audit], default=str)
    for secret in (*planted, opened.refresh_token, phone, phone[2:], "5550123"):
        assert secret not in every, secret
    actions = [a for a, *_ in trail(db)]
    assert actions == [
        "account.create",
        "login",
        "account.update",
        "code.recovery",
        "password.reset",
    ]


async def test_retention_prunes_through_a_checkpoint_and_records_that_it_did(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    for n in range(3):
        await make_account(ctx, db, email=f"old{n}@example.com")
    clock.advance(31 * 86400)
    await make_account(ctx, db, email="new@example.com")
    store = MemoryAuditStore(db)
    assert await admin_audit.prune(ctx, store, 0) == 0  # retention off
    stop = asyncio.Event()
    chainer = asyncio.create_task(admin_audit.keep_chaining(ctx, store, 30, stop, every=0.01))
    while db.tables.audit[-1].action != "audit.prune" or db.tables.audit[-1].seq is None:
        await asyncio.sleep(0.01)  # linked, pruned, and the pruning linked in the next round
    stop.set()
    await asyncio.wait_for(chainer, 5)
    assert [(r.seq, r.action, r.actor) for r in db.tables.audit] == [
        (4, "account.create", "user"),
        (5, "audit.prune", "system"),
    ]
    assert db.tables.audit[-1].detail == "removed 3 record(s) older than 30 day(s)"
    verdict = await admin_audit.verify(store)
    assert verdict.ok and verdict.count == 2 and verdict.checkpoint is not None
    assert verdict.checkpoint.seq == 3


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_a_time_is_spelled_as_it_always_was(moment: datetime, offset_minutes: int) -> None:
    """The chain's hashes cover `iso`'s spelling: records linked by an earlier release verify
    only while it writes each time exactly as strftime did."""
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert iso(aware) == aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
