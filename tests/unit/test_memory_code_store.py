"""The memory code store's sweep, which the shared contract (tests/contract/test_code_store.py)
cannot see: Redis expires its keys itself, while the memory store must drop the codes and
wrong-try counts of subjects that never come back, or a long-running `serve` keeps them all."""

from __future__ import annotations

from gatehouse.domain.codes import FAILURE_WINDOW_SECONDS, CodeCheck
from gatehouse.security.memory import SWEEP_FLOOR, MemoryCodeStore, MemoryFailureCounter
from tests.unit.helpers import FakeClock

PURPOSE = "verify"
TTL = 600
ATTEMPTS = 5
KEEPERS = 16  # codes that outlive the whole test
ROUNDS = 8
BATCH = SWEEP_FLOOR  # new subjects per round, every second one with a wrong try
# At most one round's entries are live at a time, with the keepers' codes and `tried-`'s code
# and wrong try, and the store holds no more than twice what was live at its last sweep. Without
# the sweep it would hold every round's: several times that bound.
LIVE = KEEPERS + 2 + BATCH + BATCH // 2
BOUND = max(SWEEP_FLOOR, 2 * LIVE)
assert ROUNDS * (BATCH + BATCH // 2) > 2 * BOUND


def held(codes: MemoryCodeStore) -> int:
    """Codes, wrong-try counts and receipts in memory, expired ones included."""
    return len(codes._codes) + len(codes._fails) + len(codes._receipts)


async def test_expired_codes_and_wrong_tries_are_swept_and_live_ones_kept(
    codes: MemoryCodeStore, clock: FakeClock
) -> None:
    long_ttl = (ROUNDS + 1) * (FAILURE_WINDOW_SECONDS + 1)
    for k in range(KEEPERS):
        assert await codes.put(PURPOSE, f"keeper-{k}", f"code-{k}", long_ttl, ATTEMPTS) == ATTEMPTS
    for r in range(ROUNDS):
        # A subject whose wrong try is recent throughout the round: the sweeps must keep it.
        await codes.put(PURPOSE, f"tried-{r}", "right", TTL, ATTEMPTS)
        assert await codes.check(PURPOSE, f"tried-{r}", "wrong") == CodeCheck.MISMATCH
        swept = False
        for i in range(BATCH):
            before = held(codes)
            await codes.put(PURPOSE, f"round-{r}-{i}", "right", TTL, ATTEMPTS)
            if i % 2:
                assert await codes.check(PURPOSE, f"round-{r}-{i}", "wrong") == CodeCheck.MISMATCH
            # Nothing here deletes an entry but a sweep (no old subject is touched again).
            swept = swept or held(codes) < before
            assert held(codes) <= BOUND
        # Once earlier rounds have expired, every round sweeps them while its own are live.
        assert swept or r == 0
        # ...and kept this round's codes and wrong tries: its first subjects, put before any of
        # the round's sweeps, still have theirs.
        assert await codes.check(PURPOSE, f"round-{r}-0", "right") == CodeCheck.OK
        assert await codes.check(PURPOSE, f"round-{r}-1", "wrong") == CodeCheck.MISMATCH
        assert await codes.put(PURPOSE, f"round-{r}-1", "new", TTL, ATTEMPTS) == ATTEMPTS - 2
        assert await codes.put(PURPOSE, f"tried-{r}", "new", TTL, ATTEMPTS) == ATTEMPTS - 1
        clock.advance(FAILURE_WINDOW_SECONDS + 1)  # past every code and wrong try of the round

    # Every round has expired now: putting on, the next sweep leaves exactly the live entries.
    for n in range(2 * SWEEP_FLOOR):
        before = held(codes)
        await codes.put(PURPOSE, f"after-{n}", "right", TTL, ATTEMPTS)
        if held(codes) < before:
            break
    assert held(codes) == KEEPERS + n + 1
    # The sweeps never took a live code: the keepers' are all there, with all their tries.
    for k in range(KEEPERS):
        for _ in range(ATTEMPTS - 1):
            assert await codes.check(PURPOSE, f"keeper-{k}", "wrong") == CodeCheck.MISMATCH
        assert await codes.check(PURPOSE, f"keeper-{k}", f"code-{k}") == CodeCheck.OK


async def test_expired_receipts_are_swept_and_live_ones_still_answer(
    codes: MemoryCodeStore, clock: FakeClock
) -> None:
    # A job's receipt lets the same job present its spent code again for a while; receipts of
    # jobs that never run again must go too.
    for i in range(3 * SWEEP_FLOOR):
        await codes.put(PURPOSE, f"job-{i}", "right", TTL, ATTEMPTS)
        check = await codes.check(
            PURPOSE, f"job-{i}", "right", receipt=f"r-{i}", receipt_ttl_seconds=60
        )
        assert check == CodeCheck.OK
        if i % SWEEP_FLOOR == SWEEP_FLOOR - 1:
            # The newest receipt still answers; then every receipt so far expires.
            again = await codes.check(PURPOSE, f"job-{i}", "right", receipt=f"r-{i}")
            assert again == CodeCheck.OK
            clock.advance(61)
        assert held(codes) <= 2 * SWEEP_FLOOR
    assert await codes.check(PURPOSE, "job-0", "right", receipt="r-0") == CodeCheck.MISSING


async def test_failure_counts_of_keys_that_never_return_are_swept() -> None:
    failures = MemoryFailureCounter()
    now = 1000.0
    for i in range(4 * SWEEP_FLOOR):
        assert await failures.add(f"key-{i}", now, 60) == 1
        assert len(failures._entries) <= 2 * SWEEP_FLOOR
        if i % SWEEP_FLOOR == SWEEP_FLOOR - 1:
            # Live counts were kept through the sweeps so far and still count...
            assert await failures.get(f"key-{i - SWEEP_FLOOR + 1}", now) == (1, now)
            now += 61  # ...and now every count so far is past its window.
    assert await failures.get("key-0", now) == (0, 0.0)
