"""`ports.CodeStore` on memory (`MemoryCodeStore`) and Redis (`RedisCodeStore`): single use, tries
counted per code and per subject, receipts, restore, expiry, and atomic checks."""

from __future__ import annotations

import asyncio

from gatehouse.domain.codes import CodeCheck
from gatehouse.ports import CodeStore
from tests.contract.conftest import Clock

GOOD, BAD, OTHER = "a" * 64, "b" * 64, "c" * 64
REGISTER, RECOVERY = "register", "recovery"


async def test_the_right_code_is_accepted_once(codes: CodeStore) -> None:
    await codes.ping()
    assert await codes.put(REGISTER, "subj", GOOD, 60, 5) == 5
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.OK
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "never-issued", GOOD) is CodeCheck.MISSING


async def test_a_code_is_bound_to_its_purpose_and_its_subject(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    assert await codes.check(RECOVERY, "subj", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "someone-else", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.OK


async def test_wrong_tries_spend_the_code_and_the_last_one_kills_it(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    results = [await codes.check(REGISTER, "subj", BAD) for _ in range(5)]
    assert results == [CodeCheck.MISMATCH] * 4 + [CodeCheck.EXHAUSTED]
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISSING  # no code: no try


async def test_a_new_code_replaces_the_old_one(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    assert await codes.put(REGISTER, "subj", OTHER, 60, 5) == 5
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.MISMATCH
    assert await codes.check(REGISTER, "subj", OTHER) is CodeCheck.OK


async def test_a_new_code_does_not_reset_the_wrong_try_count(codes: CodeStore) -> None:
    assert await codes.put(REGISTER, "subj", GOOD, 60, 5) == 5
    for _ in range(3):
        assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISMATCH
    assert await codes.put(REGISTER, "subj", GOOD, 60, 5) == 2  # three already spent
    assert await codes.put(RECOVERY, "subj", GOOD, 60, 5) == 5  # counted per purpose
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISMATCH
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.EXHAUSTED
    assert await codes.put(REGISTER, "subj", GOOD, 60, 5) == 0  # none left this window
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.MISSING


async def test_the_right_code_clears_the_wrong_try_count(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISMATCH
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.OK
    assert await codes.put(REGISTER, "subj", GOOD, 60, 5) == 5


async def test_restore_puts_back_a_consumed_code_but_never_over_a_live_one(
    codes: CodeStore,
) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.OK
    await codes.restore(REGISTER, "subj", GOOD, 60, 2)
    await codes.put(REGISTER, "other", GOOD, 60, 5)
    await codes.restore(REGISTER, "other", BAD, 60, 5)  # a newer code exists: kept
    assert await codes.check(REGISTER, "other", GOOD) is CodeCheck.OK
    # Put back with the tries given.
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISMATCH
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.EXHAUSTED
    await codes.restore(REGISTER, "subj", GOOD, 60, 2)
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.OK


async def test_a_receipt_lets_the_same_job_through_again_and_nobody_else(
    codes: CodeStore,
) -> None:
    """A job whose worker died after the check runs again; its receipt passes, others do not."""
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    wrong = await codes.check(REGISTER, "subj", BAD, receipt="r1", receipt_ttl_seconds=60)
    assert wrong is CodeCheck.MISMATCH  # a wrong code leaves no receipt
    assert await codes.check(REGISTER, "subj", BAD, receipt="r1") is CodeCheck.MISMATCH
    ok = await codes.check(REGISTER, "subj", GOOD, receipt="r1", receipt_ttl_seconds=60)
    assert ok is CodeCheck.OK
    # Spent: without the receipt, or with another one, the code is gone.
    assert await codes.check(REGISTER, "subj", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "subj", GOOD, receipt="r2") is CodeCheck.MISSING
    assert await codes.check(RECOVERY, "subj", GOOD, receipt="r1") is CodeCheck.MISSING
    # The holder passes again even after a newer code was issued, which it does not touch.
    await codes.put(REGISTER, "subj", OTHER, 60, 5)
    assert await codes.check(REGISTER, "subj", GOOD, receipt="r1") is CodeCheck.OK
    assert await codes.check(REGISTER, "subj", OTHER) is CodeCheck.OK
    # A success without a receipt time leaves none behind.
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    assert await codes.check(REGISTER, "subj", GOOD, receipt="r3") is CodeCheck.OK
    assert await codes.check(REGISTER, "subj", GOOD, receipt="r3") is CodeCheck.MISSING


async def test_codes_and_receipts_expire_and_an_expired_code_can_be_restored(
    codes: CodeStore, clock: Clock
) -> None:
    await codes.put(REGISTER, "short", GOOD, 1, 5)
    await codes.put(REGISTER, "long", GOOD, 3, 5)
    await codes.put(REGISTER, "spent", GOOD, 60, 5)
    await codes.put(REGISTER, "gone", GOOD, 1, 5)
    spent = await codes.check(REGISTER, "spent", GOOD, receipt="r", receipt_ttl_seconds=1)
    assert spent is CodeCheck.OK
    await clock.elapse(1.1)
    assert await codes.check(REGISTER, "short", GOOD) is CodeCheck.MISSING
    assert await codes.check(REGISTER, "spent", GOOD, receipt="r") is CodeCheck.MISSING
    assert await codes.check(REGISTER, "long", GOOD) is CodeCheck.OK
    # An expired code is no live code: a restore puts the consumed one back over it.
    await codes.restore(REGISTER, "gone", OTHER, 60, 5)
    assert await codes.check(REGISTER, "gone", OTHER) is CodeCheck.OK


async def test_fifty_simultaneous_right_codes_succeed_exactly_once(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    results = await asyncio.gather(*(codes.check(REGISTER, "subj", GOOD) for _ in range(50)))
    assert results.count(CodeCheck.OK) == 1
    assert results.count(CodeCheck.MISSING) == 49


async def test_concurrent_wrong_codes_are_all_counted(codes: CodeStore) -> None:
    await codes.put(REGISTER, "subj", GOOD, 60, 5)
    results = await asyncio.gather(*(codes.check(REGISTER, "subj", BAD) for _ in range(20)))
    assert results.count(CodeCheck.MISMATCH) == 4
    assert results.count(CodeCheck.EXHAUSTED) == 1
    assert results.count(CodeCheck.MISSING) == 15


async def test_a_code_keeps_its_binding_while_it_lives(codes: CodeStore, clock: Clock) -> None:
    """No live code answers "" as a code put without a binding does: which of the two it is
    must not cost a caller a different path (a read elsewhere) that could be timed."""
    assert await codes.binding(REGISTER, "subj") == ""  # no code
    await codes.put(REGISTER, "subj", GOOD, 60, 5, "signup-1")
    await codes.put(REGISTER, "plain", GOOD, 60, 5)
    await codes.put(REGISTER, "brief", GOOD, 1, 5, "signup-3")
    assert await codes.binding(REGISTER, "subj") == "signup-1"
    assert await codes.binding(RECOVERY, "subj") == ""  # per purpose
    assert await codes.binding(REGISTER, "plain") == ""
    # A wrong try leaves the code and its binding; a new code brings its own.
    assert await codes.check(REGISTER, "subj", BAD) is CodeCheck.MISMATCH
    assert await codes.binding(REGISTER, "subj") == "signup-1"
    await codes.put(REGISTER, "subj", OTHER, 60, 5, "signup-2")
    assert await codes.binding(REGISTER, "subj") == "signup-2"
    # Spent, it is gone with its code; restored, it is back with it.
    assert await codes.check(REGISTER, "subj", OTHER) is CodeCheck.OK
    assert await codes.binding(REGISTER, "subj") == ""
    await codes.restore(REGISTER, "subj", OTHER, 60, 5, "signup-2")
    assert await codes.binding(REGISTER, "subj") == "signup-2"
    await clock.elapse(1.1)
    assert await codes.binding(REGISTER, "brief") == ""  # expired with its code
