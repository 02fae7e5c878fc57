"""The api's PostgreSQL connection pool (storage/pg_pool.py), on stand-in connections: what it
lends, who waits, and that no slot is lost whatever happens to a connection or a waiter.
tests/integration/test_sql_contract.py runs it on PostgreSQL (connections cut included)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest

from gatehouse.storage.pg_pool import ConnectionPool


class Conn:
    numbers = itertools.count(1)

    def __init__(self) -> None:
        self.n = next(self.numbers)
        self.closed = False
        self.in_tx = False
        self.how = ""  # "terminate" or "close"

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return self.in_tx

    def terminate(self) -> None:
        self.closed, self.how = True, self.how or "terminate"

    async def close(self, timeout: float) -> None:
        self.closed, self.how = True, self.how or "close"


class Server:
    """Opens stand-in connections; `fail` makes the next opening fail, `slow` holds them."""

    def __init__(self) -> None:
        self.opened: list[Conn] = []
        self.fail = 0
        self.slow = asyncio.Event()
        self.slow.set()

    async def connect(self) -> Any:
        await self.slow.wait()
        if self.fail:
            self.fail -= 1
            raise OSError("connection refused")
        conn = Conn()
        self.opened.append(conn)
        return conn


def pool(server: Server, size: int = 2, **kw: Any) -> ConnectionPool:
    return ConnectionPool(server.connect, size, **kw)


async def test_none_opened_before_the_first_unit_and_the_last_given_back_lent_next() -> None:
    server = Server()
    p = pool(server)
    assert server.opened == [] and p.open == 0
    a, b = await p.acquire(), await p.acquire()
    assert len(server.opened) == 2 and p.open == 2 and p.idle == 0
    p.release(a)
    p.release(b)
    assert await p.acquire() is b and await p.acquire() is a  # the warmest first
    assert len(server.opened) == 2


async def test_past_its_size_a_unit_waits_and_the_first_to_wait_is_served_first() -> None:
    server = Server()
    p = pool(server, size=1)
    lent = await p.acquire()
    got: list[str] = []

    async def unit(name: str) -> None:
        conn = await p.acquire()
        got.append(name)
        await asyncio.sleep(0)
        p.release(conn)

    waiting = [asyncio.create_task(unit(n)) for n in ("first", "second", "third")]
    await asyncio.sleep(0.01)
    assert got == [] and len(server.opened) == 1
    p.release(lent)
    await asyncio.gather(*waiting)
    assert got == ["first", "second", "third"] and len(server.opened) == 1
    assert p.open == 1 and p.idle == 1


async def test_a_wait_that_times_out_is_an_error_and_loses_no_slot() -> None:
    server = Server()
    p = pool(server, size=1, wait=0.05)
    lent = await p.acquire()
    with pytest.raises(TimeoutError):
        await p.acquire()
    p.release(lent)
    assert p.open == 1 and await p.acquire() is lent


@pytest.mark.parametrize("given", ["a connection", "a free slot"])
async def test_a_unit_cancelled_as_it_was_given_a_connection_or_a_slot_passes_it_on(
    given: str,
) -> None:
    server = Server()
    p = pool(server, size=1)
    lent = await p.acquire()
    first = asyncio.create_task(p.acquire())
    second = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    # Handed to the first waiter (its slot promised, when dropped), cancelled before it runs.
    if given == "a connection":
        p.release(lent)
    else:
        p.drop(lent)
    first.cancel()
    assert await second is (lent if given == "a connection" else server.opened[1])
    with pytest.raises(asyncio.CancelledError):
        await first
    assert p.open == 1 and len(server.opened) == (1 if given == "a connection" else 2)


async def test_a_connection_that_fails_to_open_frees_its_slot_for_the_next_unit() -> None:
    server = Server()
    p = pool(server, size=1)
    server.fail = 1
    with pytest.raises(OSError):
        await p.acquire()
    assert p.open == 0
    conn = await p.acquire()
    assert conn is server.opened[0] and p.open == 1


async def test_a_waiter_opens_a_connection_in_the_slot_a_failed_opening_gave_up() -> None:
    server = Server()
    p = pool(server, size=1)
    server.slow.clear()
    server.fail = 1
    opening = asyncio.create_task(p.acquire())
    waiting = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    assert p.open == 1  # the one being opened holds the only slot
    server.slow.set()
    with pytest.raises(OSError):
        await opening
    assert await waiting is server.opened[0] and p.open == 1


@pytest.mark.parametrize("state", ["closed", "in a transaction"])
async def test_a_connection_given_back_closed_or_mid_transaction_is_never_lent_again(
    state: str,
) -> None:
    server = Server()
    p = pool(server, size=1)
    conn = await p.acquire()
    waiting = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    if state == "closed":
        conn.closed = True
    else:
        conn.in_tx = True
    p.release(conn)
    fresh = await waiting
    assert fresh is not conn and conn.closed and p.open == 1 and len(server.opened) == 2


async def test_an_idle_connection_found_closed_is_replaced() -> None:
    server = Server()
    p = pool(server, size=1)
    conn = await p.acquire()
    p.release(conn)
    conn.closed = True  # the server ended it while idle
    assert await p.acquire() is server.opened[1] and p.open == 1


async def test_after_expire_idle_connections_close_and_lent_ones_close_when_given_back() -> None:
    server = Server()
    p = pool(server, size=3)
    idle, lent = await p.acquire(), await p.acquire()
    p.release(idle)
    p.expire()
    assert idle.how == "terminate" and p.open == 1 and not lent.closed
    p.release(lent)
    assert lent.closed and p.open == 0 and p.idle == 0
    assert await p.acquire() is server.opened[2]


async def test_dropping_a_connection_closes_it_and_frees_its_slot() -> None:
    server = Server()
    p = pool(server, size=1)
    conn = await p.acquire()
    waiting = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    p.drop(conn)
    assert conn.how == "terminate" and await waiting is server.opened[1] and p.open == 1
    p.drop(conn)  # twice: the slot is not freed twice
    assert p.open == 1


async def test_a_connection_idle_past_its_lifetime_is_closed_gracefully() -> None:
    server = Server()
    p = pool(server, size=2, idle_lifetime=0.2)
    old, young = await p.acquire(), await p.acquire()
    p.release(old)
    await asyncio.sleep(0.1)
    p.release(young)
    await asyncio.sleep(0.15)  # old idle 0.25 s, young 0.15 s
    assert old.how == "close" and not young.closed and p.open == 1
    await asyncio.sleep(0.15)
    assert young.how == "close" and p.open == 0 and p.idle == 0


async def test_a_connection_lent_max_uses_times_is_replaced() -> None:
    server = Server()
    p = pool(server, size=1, max_uses=3)
    for _ in range(3):
        conn = await p.acquire()
        p.release(conn)
    await asyncio.sleep(0)
    assert server.opened[0].how == "close" and p.open == 0
    assert await p.acquire() is server.opened[1]


async def test_a_connection_given_back_twice_is_lent_once() -> None:
    server = Server()
    p = pool(server, size=2)
    conn = await p.acquire()
    p.release(conn)
    p.release(conn)
    assert p.idle == 1
    assert await p.acquire() is conn and await p.acquire() is not conn


async def test_the_wait_for_a_connection_includes_opening_it() -> None:
    server = Server()
    p = pool(server, size=1, wait=0.1)
    lent = await p.acquire()
    waiting = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.05)
    server.slow.clear()  # the opening in the freed slot hangs past the wait
    p.drop(lent)
    with pytest.raises(TimeoutError):
        await waiting
    assert p.open == 0
    server.slow.set()
    assert await p.acquire() is server.opened[-1] and p.open == 1


async def test_a_connection_opened_while_the_pool_closes_is_not_kept() -> None:
    server = Server()
    p = pool(server, size=1)
    server.slow.clear()
    opening = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    await p.close()
    server.slow.set()
    with pytest.raises(asyncpg.InterfaceError):
        await opening
    assert server.opened[0].closed and p.open == 0


async def test_close_ends_idle_and_waiting_units_and_closes_lent_ones_when_given_back() -> None:
    server = Server()
    p = pool(server, size=2)
    idle, lent = await p.acquire(), await p.acquire()
    p.release(idle)
    await p.acquire()  # idle again lent: take it back out so that a unit waits
    waiting = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    p.release(idle)  # the waiter gets it
    assert await waiting is idle
    third = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.01)
    await p.close()
    with pytest.raises(asyncpg.InterfaceError):
        await third
    p.release(lent)
    p.release(idle)
    assert lent.closed and idle.closed and p.open == 0
    with pytest.raises(asyncpg.InterfaceError):
        await p.acquire()
