"""The api's pool of PostgreSQL connections: a stack of idle ones, lent and given back.

Not asyncpg's `Pool`: its `acquire` runs under `wait_for` and its `release` in a task of its own
behind `asyncio.shield`, so every unit of work paid for two tasks and an extra turn of the event
loop; on this project's bench host that was 55 µs of the api's CPU a unit (a refresh is one
unit and about 800 µs in all). Units of work end their transaction before giving a connection
back and use no LISTEN, advisory lock, cursor or session setting, so a connection given back
needs no reset, and giving it back is synchronous.

What the pool keeps of asyncpg's: at most `size` connections open (those being opened count),
none opened before the first use, a connection idle for `idle_lifetime` closed, waiters served
first come first served, `expire()` after a connection was found dead (the ones idle beside it
most likely died with it), and a graceful `close()`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

import asyncpg


class ConnectionPool:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        size: int,
        idle_lifetime: float = 300.0,
        wait: float = 30.0,
        max_uses: int = 50_000,
    ):
        self._connect = connect
        self._size = max(1, size)
        self._lifetime = idle_lifetime
        self._wait = wait  # the longest a unit waits for a connection, its opening included
        # Lent this often, a connection is closed and replaced (asyncpg's max_queries): the
        # warmest is lent first, so one server process would otherwise serve for ever.
        self._max_uses = max_uses
        self._idle: deque[tuple[asyncpg.Connection, float]] = deque()  # last given back last
        self._open = 0  # open, being opened, or a slot promised to a waiter
        # A waiter is given a connection, or None: a free slot, reserved for it to open one.
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._generation = 0
        self._born: dict[asyncpg.Connection, int] = {}  # open (lent or idle): its generation
        self._uses: dict[asyncpg.Connection, int] = {}
        self._lent: set[asyncpg.Connection] = set()  # a second release of one is ignored
        self._sweep: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def open(self) -> int:
        return self._open

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the connection pool is closed")
        while self._idle:
            conn, _ = self._idle.pop()  # the warmest
            if not conn.is_closed():
                return self._lend(conn)
            self.drop(conn)
        if self._open < self._size:
            self._open += 1
            return await self._open_one()
        async with asyncio.timeout(self._wait):
            conn = await self._queue()
            return self._lend(conn) if conn is not None else await self._open_one()

    async def _queue(self) -> asyncpg.Connection | None:
        """Waits for a connection given back, or for a free slot (None)."""
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            # Given one as we were cancelled or timed out: passed on, never lost.
            if not waiter.done():
                waiter.cancel()
            if waiter.cancelled() or waiter.exception() is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            elif (given := waiter.result()) is None:
                self._forget_slot()
            else:
                self.release(given)
            raise

    async def _open_one(self) -> asyncpg.Connection:
        """Opens a connection in a slot already counted as open."""
        try:
            conn = await self._connect()
        except BaseException:
            self._forget_slot()
            raise
        if self._closed:
            conn.terminate()
            self._forget_slot()
            raise asyncpg.InterfaceError("the connection pool is closed")
        self._born[conn] = self._generation
        return self._lend(conn)

    def _lend(self, conn: asyncpg.Connection) -> asyncpg.Connection:
        self._lent.add(conn)
        self._uses[conn] = self._uses.get(conn, 0) + 1
        return conn

    def release(self, conn: asyncpg.Connection) -> None:
        """Gives a connection back: to the first waiter, else to the idle stack. One that is
        closed, still in a transaction, or older than the last `expire()` is closed instead;
        one lent `max_uses` times, gracefully."""
        if conn not in self._lent:
            return  # given back already, or not this pool's (one lent before a close)
        self._lent.discard(conn)
        if (
            self._closed
            or conn.is_closed()
            or conn.is_in_transaction()
            or self._born.get(conn) != self._generation
        ):
            self.drop(conn)
            return
        if self._uses.get(conn, 0) >= self._max_uses:
            self._gracefully(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._lent.add(conn)
                waiter.set_result(conn)
                return
        loop = asyncio.get_running_loop()
        self._idle.append((conn, loop.time()))
        if self._sweep is None:
            self._sweep = loop.call_later(self._lifetime, self._swept)

    def drop(self, conn: asyncpg.Connection) -> None:
        """Closes a connection in an unknown state (nothing sent: the server ends its
        transaction, if any) and frees its slot."""
        with contextlib.suppress(Exception):
            conn.terminate()
        self._lent.discard(conn)
        if conn in self._born:
            self._forget(conn)

    def expire(self) -> None:
        """The connections idle now are closed, and those lent are when given back."""
        self._generation += 1
        idle, self._idle = self._idle, deque()
        for conn, _ in idle:
            self.drop(conn)

    async def close(self) -> None:
        """Idle connections closed gracefully; lent ones are closed as they come back."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connection pool is closed"))
        self._waiters.clear()
        idle, self._idle = self._idle, deque()
        for conn, _ in idle:
            self._gracefully(conn)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=10)

    def _swept(self) -> None:
        """Closes what has been idle for `idle_lifetime` (the oldest are at the left: the
        stack grows and is lent from the right)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and now - self._idle[0][1] >= self._lifetime:
            conn, _ = self._idle.popleft()
            self._gracefully(conn)
        if self._idle:
            wait = self._lifetime - (now - self._idle[0][1])
            self._sweep = loop.call_later(wait, self._swept)

    def _gracefully(self, conn: asyncpg.Connection) -> None:
        self._forget(conn)

        async def close() -> None:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget(self, conn: asyncpg.Connection) -> None:
        self._born.pop(conn, None)
        self._uses.pop(conn, None)
        self._forget_slot()

    def _forget_slot(self) -> None:
        """A slot is free: the first waiter may open a connection in it."""
        self._open -= 1
        while self._waiters and not self._closed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return
