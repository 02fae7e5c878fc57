"""Concurrent one-row writes gathered into one statement: `Batches`.

On PostgreSQL the fixed cost of a statement (its round trip, its executor, its commit) is most of
a small write's cost, on both sides of the connection: here a one-row insert cost 187 µs of the
server's CPU and a four-row one 293 µs (pgbench, 8 clients). So under load, the calls made while
earlier batches are in flight wait for the next one together, and one statement answers them
all. Unloaded, a call goes at once, alone: batching adds no wait of its own, only the time a
call spends behind a batch already in flight, which it would have spent queueing for the
database anyway."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg


def not_for_all(exc: Exception) -> bool:
    """An error of a batched statement that need not be every item's: a value of one that
    asyncpg cannot encode or the database refuses (a unique address taken meanwhile), or a
    deadlock with another transaction holding some of the batch's rows. Each is run again
    alone (`Batches`' `alone_after`), so that a call fails only for its own reason."""
    return isinstance(
        exc,
        ValueError
        | asyncpg.DataError
        | asyncpg.IntegrityConstraintViolationError
        | asyncpg.TransactionRollbackError,
    )


def statement_size(count: int) -> int:
    """The size of the statement that carries `count` items: the next power of two, the rest
    filled (`Batches`' `fill`) with items that match no row. PostgreSQL plans each statement's
    first five uses on each connection anew before it keeps a generic plan: with a statement
    for every size, most batches of a ten-second run were planned from scratch; with five
    sizes, hardly any."""
    size = 1
    while size < count:
        size *= 2
    return size


Item = TypeVar("Item")
Result = TypeVar("Result")


class Batches(Generic[Item, Result]):
    """`await batches(item)` is `run([item, ...])[i]` for the batch `item` went in.

    At most `lanes` batches are in flight at once, each of at most `most` items. `run` answers
    one result for each item, in order; if it raises, every call of that batch raises it. Items
    of one `key` go in separate batches, in the order they came: each batch then does what
    the same calls one after the other would; a batch goes to `run` in the order of its keys
    (the order its statement locks rows in, so that two batches never wait on each other in a
    cycle). With `fill`, a batch goes padded to `statement_size` with `fill(last item)`, whose
    results are dropped. A batch failing with an error `alone_after` accepts (one its items'
    values may cause) is run again an item at a time, so that no call fails for another's
    item."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        lanes: int = 2,
        most: int = 16,
        key: Callable[[Item], str] | None = None,
        fill: Callable[[Item], Item] | None = None,
        alone_after: Callable[[Exception], bool] | None = None,
    ):
        self._run = run
        self._key = key
        self._fill = fill
        self._alone_after = alone_after
        self._lanes = lanes
        self._most = most
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._busy = 0
        self._running: set[str] = set()  # the keys of the batches in flight
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        self._kick(loop)
        return await future  # cancelled: its batch, if it started, answers nobody for it

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        # A batch starts on the loop's next pass, not now: the calls made by the requests the
        # loop is running in this pass (their reads arrived together) go with it.
        if self._busy < self._lanes and self._waiting and not self._scheduled:
            self._scheduled = True
            # A context of its own: the batch is no single request's (its log fields, its span).
            loop.call_soon(self._start, loop, context=contextvars.Context())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._busy < self._lanes and self._waiting:
            batch = self._take()
            if not batch:  # none, or each of a key in flight: the batch ending kicks again
                break
            self._busy += 1
            task = loop.create_task(self._answer(loop, batch))
            self._tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The next batch: the first `most` waiting, less the cancelled and every later one of
        a key already in it or in a batch in flight (they stay, first in line for the next)."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        left: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[str] = set()
        for waiting in self._waiting:
            if waiting[1].done():
                continue
            key = None if self._key is None else self._key(waiting[0])
            taken = key is not None and (key in keys or key in self._running)
            if len(batch) == self._most or taken:
                left.append(waiting)
                continue
            if key is not None:
                keys.add(key)
            batch.append(waiting)
        self._waiting = left
        self._running |= keys
        if self._key is not None:
            key_of = self._key
            batch.sort(key=lambda waiting: key_of(waiting[0]))
        return batch

    async def _answer(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            try:
                results = await self._results(batch)
            except Exception as exc:
                if len(batch) == 1 or self._alone_after is None or not self._alone_after(exc):
                    raise
                for single in batch:
                    if not single[1].done():
                        await self._answer_alone(single)
                return
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):  # cancelled (shutting down) or exiting
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy -= 1
            if self._key is not None:
                self._running -= {self._key(item) for item, _ in batch}
            self._kick(loop)

    async def _results(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> list[Result]:
        items = [item for item, _ in batch]
        if self._fill is not None:
            items += [self._fill(items[-1])] * (statement_size(len(items)) - len(items))
        results = await self._run(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} answered {len(results)} results")
        return results[: len(batch)]

    async def _answer_alone(self, single: tuple[Item, asyncio.Future[Result]]) -> None:
        future = single[1]
        try:
            (result,) = await self._results([single])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
