"""Batches (storage/pg_batch.py): concurrent calls gathered into one run, each answered with its
own result; a failure reaches its batch's callers only; lanes, sizes and keys kept."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.storage.pg_batch import Batches, statement_size


class Runs:
    """A `run` that records each batch and holds it until released."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[object]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, items: list[object]) -> list[object]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        if self.fail_on in items:
            raise ValueError(f"no: {self.fail_on}")
        return [("done", item) for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_call_alone_goes_at_once_alone() -> None:
    runs = Runs()
    runs.release.set()
    batches = Batches(runs, lanes=1)
    assert await batches("a") == ("done", "a")
    assert runs.batches == [["a"]]


async def test_calls_made_while_the_lanes_are_busy_go_together_and_each_gets_its_own() -> None:
    runs = Runs()
    batches = Batches(runs, lanes=1, most=64)
    first = asyncio.ensure_future(batches(0))
    await settle()
    assert runs.batches == [[0]]  # went alone, and holds the only lane
    rest = [asyncio.ensure_future(batches(n)) for n in range(1, 11)]
    await settle()
    assert runs.batches == [[0]]  # waiting for the lane
    runs.release.set()
    assert await first == ("done", 0)
    assert await asyncio.gather(*rest) == [("done", n) for n in range(1, 11)]
    assert runs.batches == [[0], list(range(1, 11))]
    assert runs.most_running == 1


async def test_no_more_than_lanes_batches_run_at_once_nor_more_than_most_in_one() -> None:
    runs = Runs()
    batches = Batches(runs, lanes=2, most=3)
    calls = [asyncio.ensure_future(batches(n)) for n in range(10)]
    await settle()
    assert runs.running == 2
    runs.release.set()
    assert await asyncio.gather(*calls) == [("done", n) for n in range(10)]
    assert runs.most_running == 2
    assert max(len(batch) for batch in runs.batches) == 3
    assert sorted(n for batch in runs.batches for n in batch) == list(range(10))  # each once


async def test_calls_of_one_key_go_in_separate_batches_in_their_order() -> None:
    runs = Runs()
    batches: Batches[str, object] = Batches(runs, lanes=1, key=lambda item: item[0])
    held = asyncio.ensure_future(batches("z0"))
    await settle()
    calls = [asyncio.ensure_future(batches(item)) for item in ("a1", "b1", "a2", "a3", "b2")]
    runs.release.set()
    await asyncio.gather(held, *calls)
    assert runs.batches == [["z0"], ["a1", "b1"], ["a2", "b2"], ["a3"]]


async def test_a_failed_batch_fails_its_callers_only_and_the_next_batches_still_run() -> None:
    runs = Runs(fail_on="bad")
    batches = Batches(runs, lanes=1)
    held = asyncio.ensure_future(batches("first"))
    await settle()
    failing = [asyncio.ensure_future(batches(item)) for item in ("x", "bad", "y")]
    runs.release.set()
    assert await held == ("done", "first")
    for call in failing:
        with pytest.raises(ValueError, match="no: bad"):
            await call
    assert await batches("after") == ("done", "after")


async def test_a_cancelled_call_is_left_out_and_the_others_are_answered() -> None:
    runs = Runs()
    batches = Batches(runs, lanes=1)
    held = asyncio.ensure_future(batches("first"))
    await settle()
    gone = asyncio.ensure_future(batches("gone"))
    kept = asyncio.ensure_future(batches("kept"))
    await settle()
    gone.cancel()
    runs.release.set()
    assert await kept == ("done", "kept")
    assert await held == ("done", "first")
    assert gone.cancelled()
    assert runs.batches == [["first"], ["kept"]]


async def test_a_run_answering_the_wrong_number_of_results_fails_its_callers() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batches = Batches(short, lanes=1)
    with pytest.raises(RuntimeError, match="a batch of 1 answered 0 results"):
        await batches(1)


async def test_a_batch_failing_for_one_items_value_is_run_again_an_item_at_a_time() -> None:
    runs = Runs(fail_on="bad")
    runs.release.set()
    blocker = asyncio.Event()  # holds the first batch, so that the next three go together

    async def slow(items: list[object]) -> list[object]:
        await blocker.wait()
        return await runs(items)

    batches = Batches(slow, lanes=1, alone_after=lambda exc: isinstance(exc, ValueError))
    first = asyncio.ensure_future(batches("first"))
    await settle()
    calls = [asyncio.ensure_future(batches(item)) for item in ("x", "bad", "y")]
    await settle()
    blocker.set()
    assert await first == ("done", "first")
    assert await calls[0] == ("done", "x")
    with pytest.raises(ValueError, match="no: bad"):
        await calls[1]
    assert await calls[2] == ("done", "y")
    assert runs.batches == [["first"], ["x", "bad", "y"], ["x"], ["bad"], ["y"]]


async def test_an_error_alone_after_does_not_accept_fails_the_whole_batch() -> None:
    runs = Runs(fail_on="bad")
    batches = Batches(runs, lanes=1, alone_after=lambda exc: isinstance(exc, KeyError))
    first = asyncio.ensure_future(batches("first"))
    await settle()
    calls = [asyncio.ensure_future(batches(item)) for item in ("x", "bad")]
    runs.release.set()
    await first
    for call in calls:
        with pytest.raises(ValueError):
            await call
    assert runs.batches == [["first"], ["x", "bad"]]


def test_a_statement_carries_the_next_power_of_two_items() -> None:
    assert [statement_size(n) for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [1, 2, 4, 4, 8, 8, 16, 16]


async def test_a_key_in_flight_waits_for_its_batch_to_end_whatever_lane_is_free() -> None:
    runs = Runs()
    batches: Batches[str, object] = Batches(runs, lanes=2, key=lambda item: item[0])
    first = asyncio.ensure_future(batches("a1"))
    await settle()
    later = [asyncio.ensure_future(batches(item)) for item in ("a2", "b1")]
    await settle()
    # The free lane takes b1 only: a2 waits for a1's batch, never runs beside it.
    assert runs.batches == [["a1"], ["b1"]]
    runs.release.set()
    await asyncio.gather(first, *later)
    assert runs.batches == [["a1"], ["b1"], ["a2"]]
    assert batches._running == set()


async def test_a_batch_goes_in_key_order_filled_to_its_statement_size_and_fillers_are_dropped() -> (
    None
):
    runs = Runs()
    batches: Batches[str, object] = Batches(
        runs, lanes=1, key=lambda item: item, fill=lambda item: "~" + item
    )
    held = asyncio.ensure_future(batches("m"))
    await settle()
    calls = [asyncio.ensure_future(batches(item)) for item in ("c", "a", "b")]
    runs.release.set()
    assert await held == ("done", "m")
    assert await asyncio.gather(*calls) == [("done", "c"), ("done", "a"), ("done", "b")]
    assert runs.batches == [["m"], ["a", "b", "c", "~c"]]
