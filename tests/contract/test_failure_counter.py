"""`ports.FailureCounter` on memory (`MemoryFailureCounter`) and Redis (`RedisFailureCounter`):
consecutive failures per key, forgotten a window after the last one or when cleared."""

from __future__ import annotations

from gatehouse.ports import FailureCounter
from tests.contract.conftest import Clock


async def test_failures_are_counted_per_key_with_the_time_of_the_last(
    failures: FailureCounter, clock: Clock
) -> None:
    assert await failures.get("ada", clock.now()) == (0, 0.0)
    first = clock.now()
    assert await failures.add("ada", first, 60) == 1
    assert await failures.add("ada", first + 1.5, 60) == 2
    assert await failures.add("bob", first, 60) == 1
    assert await failures.get("ada", clock.now()) == (2, first + 1.5)
    assert await failures.get("bob", clock.now()) == (1, first)


async def test_clearing_forgets_one_key(failures: FailureCounter, clock: Clock) -> None:
    now = clock.now()
    await failures.add("ada", now, 60)
    await failures.add("bob", now, 60)
    await failures.clear("ada")
    await failures.clear("nobody")
    assert await failures.get("ada", clock.now()) == (0, 0.0)
    assert await failures.get("bob", clock.now()) == (1, now)
    assert await failures.add("ada", clock.now(), 60) == 1  # counting starts again


async def test_failures_are_forgotten_a_window_after_the_last_one(
    failures: FailureCounter, clock: Clock
) -> None:
    await failures.add("ada", clock.now(), 1)
    await clock.elapse(0.6)
    last = clock.now()
    assert await failures.add("ada", last, 1) == 2  # within the window: the window restarts
    await clock.elapse(0.6)  # 1.2 s after the first failure, 0.6 s after the last
    assert await failures.get("ada", clock.now()) == (2, last)
    await clock.elapse(0.6)
    assert await failures.get("ada", clock.now()) == (0, 0.0)
    assert await failures.add("ada", clock.now(), 1) == 1
