"""The pipelined Redis connection (`PipelinedRedis`) of the job workers and the notifier, against a
scripted fake server on loopback: replies matched to commands in order however they are split,
the setup commands (AUTH, SELECT, CLIENT SETNAME) ahead of everything else, error replies,
scripts loaded again after NOSCRIPT, a lost or silent server failing the commands in flight,
then reconnecting; and the notifier's publishes, which do not wait for their answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gatehouse.jobs.redis_pipeline import PipelinedRedis
from gatehouse.realtime.notifier import CHANNEL, SocketIONotifier, socket_server

Answer = Callable[[list[str]], bytes | None]  # a command's reply; None: no reply, ever


def bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def default_answer(command: list[str]) -> bytes | None:
    name = command[0].upper()
    if name == "ECHO":
        return bulk(command[1])
    if name in ("AUTH", "SELECT", "CLIENT"):
        return b"+OK\r\n"
    if name == "FAIL":
        return b"-ERR no such thing\r\n"
    if name == "HANG":
        return None
    return b"-ERR unknown command\r\n"


class FakeRedis:
    """Parses the commands it is sent (with hiredis) and answers each with `answer`, the
    replies of one read cut into random pieces; keeps every command of every connection."""

    def __init__(self, answer: Answer = default_answer, port: int = 0):
        self.answer = answer
        self.connections: list[list[list[str]]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = port  # 0: any free one

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> FakeRedis:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands: list[list[str]] = []
        self.connections.append(commands)
        self.writers.append(writer)
        parser = hiredis.Reader(encoding="utf-8")
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                replies = b""
                while (command := parser.gets()) is not False:
                    commands.append(command)
                    replies += self.answer(command) or b""
                while replies:  # in pieces: the client must reassemble them
                    cut = random.randint(1, max(1, len(replies)))
                    writer.write(replies[:cut])
                    await writer.drain()
                    replies = replies[cut:]
        except ConnectionError:
            pass
        finally:
            writer.close()

    def drop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.drop()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def fake() -> AsyncIterator[FakeRedis]:
    async with FakeRedis() as server:
        yield server


@contextlib.asynccontextmanager
async def connected(url: str, **kwargs: Any) -> AsyncIterator[PipelinedRedis]:
    redis = PipelinedRedis(url, **kwargs)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def redis(fake: FakeRedis) -> AsyncIterator[PipelinedRedis]:
    async with connected(f"redis://127.0.0.1:{fake.port}/0") as made:
        yield made


async def test_concurrent_commands_get_their_own_replies_in_order(
    redis: PipelinedRedis, fake: FakeRedis
) -> None:
    words = [f"reply-{i}-" + "x" * random.randint(0, 3000) for i in range(300)]
    replies = await asyncio.gather(*(redis.execute("ECHO", w) for w in words))
    assert replies == words
    assert len(fake.connections) == 1  # one connection, every command pipelined on it
    assert [c[1] for c in fake.connections[0]] == words


async def test_coalesced_commands_of_one_turn_go_in_one_write(fake: FakeRedis) -> None:
    async with connected(f"redis://127.0.0.1:{fake.port}/0", coalesce=True) as redis:
        assert await redis.execute("ECHO", "first") == "first"  # connected
        connection = redis._connection
        assert connection is not None and connection.transport is not None
        writes: list[bytes] = []
        write = connection.transport.write

        def counted(data: bytes) -> None:
            writes.append(bytes(data))
            write(data)

        connection.transport.write = counted
        words = [f"word-{i}" for i in range(40)]
        assert await asyncio.gather(*(redis.execute("ECHO", w) for w in words)) == words
        # The 40 sent in one turn of the loop went in one write, in order.
        assert len(writes) == 1
        assert [c[1] for c in fake.connections[0][1:]] == words
        # A command alone is not held past its turn.
        assert await asyncio.wait_for(redis.execute("ECHO", "alone"), 1) == "alone"
        # Commands held when the connection goes fail, unsent; the next ones reconnect.
        held = [connection.send(("ECHO", f"held-{i}")) for i in range(5)]
        connection.abort()
        for reply in held:
            with pytest.raises(RedisConnectionError):
                await reply
        assert await redis.execute("ECHO", "again") == "again"
        assert [c[1] for c in fake.connections[1]] == ["again"]
        assert not any(c[1].startswith("held-") for c in fake.connections[0])


async def test_no_command_goes_out_before_the_connections_select_has_answered() -> None:
    # A command pipelined behind a SELECT that then fails would run in database 0.
    def select_answers(ok: bool) -> Answer:
        def answer(command: list[str]) -> bytes | None:
            if command[0].upper() == "SELECT":
                return b"+OK\r\n" if ok else None  # None: never answered
            return default_answer(command)

        return answer

    async with (
        FakeRedis(select_answers(False)) as server,
        connected(f"redis://127.0.0.1:{server.port}/5", timeout=1) as redis,
    ):
        first = asyncio.ensure_future(redis.execute("ECHO", "first"))
        await asyncio.sleep(0.3)  # connected, SELECT sent, no answer yet
        later = asyncio.ensure_future(redis.execute("ECHO", "later"))
        await asyncio.sleep(0.2)
        assert server.connections[0] == [["SELECT", "5"]]  # nothing sent behind it
        for caller in (first, later):
            with pytest.raises(RedisConnectionError):  # the setup's answer never came
                await caller
    async with FakeRedis(select_answers(True)) as server:
        async with connected(f"redis://127.0.0.1:{server.port}/5") as redis:
            assert await redis.execute("ECHO", "in 5") == "in 5"
        assert server.connections[0] == [["SELECT", "5"], ["ECHO", "in 5"]]


async def test_setup_commands_go_first_on_each_connection(fake: FakeRedis) -> None:
    url = f"redis://worker:s3cret@127.0.0.1:{fake.port}/7"
    async with connected(url, name="bull:read-user:w:host") as redis:
        # Commands issued while the connection is being opened wait for AUTH and SELECT.
        assert await asyncio.gather(*(redis.execute("ECHO", str(i)) for i in range(20))) == [
            str(i) for i in range(20)
        ]
        fake.drop()
        with pytest.raises(RedisConnectionError):
            while True:  # until the client has seen the connection go
                await redis.execute("ECHO", "still there?")
        assert await redis.execute("ECHO", "again") == "again"
    setup = [
        ["AUTH", "worker", "s3cret"],
        ["SELECT", "7"],
        ["CLIENT", "SETNAME", "bull:read-user:w:host"],
    ]
    assert len(fake.connections) == 2
    for commands in fake.connections:
        assert commands[:3] == setup
        assert all(c[0] == "ECHO" for c in commands[3:])


async def test_database_zero_and_no_password_need_no_setup(
    redis: PipelinedRedis, fake: FakeRedis
) -> None:
    assert await redis.execute("ECHO", "hi") == "hi"
    assert fake.connections == [[["ECHO", "hi"]]]


async def test_an_error_reply_fails_only_its_own_command(redis: PipelinedRedis) -> None:
    results = await asyncio.gather(
        redis.execute("ECHO", "a"),
        redis.execute("FAIL"),
        redis.execute("ECHO", "b"),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], ResponseError) and "no such thing" in str(results[1])


class Script:
    """What `PipelinedRedis.evalsha` needs of redis-py's `AsyncScript`."""

    def __init__(self, sha: str, script: str):
        self.sha = sha
        self.script = script


async def test_a_script_redis_does_not_know_is_loaded_and_run_again() -> None:
    loaded: dict[str, str] = {}

    def answer(command: list[str]) -> bytes | None:
        if command[0] == "EVALSHA":
            if command[1] not in loaded:
                return b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
            keys = command[3 : 3 + int(command[2])]
            return b"*2\r\n" + bulk(loaded[command[1]]) + bulk(",".join(keys))
        if command[:2] == ["SCRIPT", "LOAD"]:
            loaded["sha-of-" + command[2]] = command[2]
            return bulk("sha-of-" + command[2])
        return default_answer(command)

    async with FakeRedis(answer) as server:
        async with connected(f"redis://127.0.0.1:{server.port}") as redis:
            script = Script("stale-sha", "return KEYS")
            assert await redis.evalsha(script, ["k1", "k2"], ["arg"]) == ["return KEYS", "k1,k2"]
            assert script.sha == "sha-of-return KEYS"  # learnt: no second NOSCRIPT
            assert await redis.evalsha(script, ["k3"], []) == ["return KEYS", "k3"]
        evals = [c for c in server.connections[0] if c[0] == "EVALSHA"]
        assert [c[1] for c in evals] == ["stale-sha", "sha-of-return KEYS", "sha-of-return KEYS"]


async def test_a_lost_connection_fails_what_is_in_flight_and_the_next_command_reconnects(
    redis: PipelinedRedis, fake: FakeRedis
) -> None:
    assert await redis.execute("ECHO", "before") == "before"
    hanging = asyncio.ensure_future(redis.execute("HANG"))
    await asyncio.sleep(0.05)
    fake.drop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(hanging, 10)
    assert await redis.execute("ECHO", "after") == "after"
    assert len(fake.connections) == 2
    assert fake.connections[1] == [["ECHO", "after"]]  # nothing sent twice


async def test_a_server_that_stops_answering_is_dropped_after_the_timeout(
    fake: FakeRedis,
) -> None:
    async with connected(f"redis://127.0.0.1:{fake.port}", timeout=0.3) as redis:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(redis.execute("HANG"), 10)
        assert await redis.execute("ECHO", "back") == "back"
    assert len(fake.connections) == 2


async def test_an_unreachable_server_is_a_connection_error() -> None:
    async with FakeRedis() as server:
        port = server.port
    async with connected(f"redis://127.0.0.1:{port}", timeout=0.5) as redis:
        with pytest.raises(RedisConnectionError):  # after trying for the timeout
            await redis.execute("ECHO", "anyone?")


async def test_callers_waiting_for_a_connection_share_one_attempt() -> None:
    async with FakeRedis() as server:
        port = server.port
    async with connected(f"redis://127.0.0.1:{port}", timeout=0.5) as redis:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(redis.execute("ECHO", str(i)) for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
        # One attempt of 0.5 s for the twenty, not one after another (ten seconds).
        assert loop.time() - started < 3
        async with FakeRedis(port=port) as back:  # the next caller tries again, and gets in
            assert await redis.execute("ECHO", "back") == "back"
            assert back.connections == [[["ECHO", "back"]]]


def test_only_plain_tcp_urls_are_pipelined() -> None:
    assert PipelinedRedis.supports("redis://127.0.0.1:6379/0")
    assert not PipelinedRedis.supports("rediss://127.0.0.1:6380/0")
    assert not PipelinedRedis.supports("unix:///run/redis.sock")


async def test_commands_wait_for_a_redis_that_comes_back_within_the_timeout() -> None:
    async with FakeRedis() as first:
        port = first.port
    # Redis restarting: gone, then back on the same port.
    async with connected(f"redis://127.0.0.1:{port}", timeout=30) as redis:
        waiting = asyncio.ensure_future(redis.execute("ECHO", "back?"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        async with FakeRedis(port=port):
            assert await asyncio.wait_for(waiting, 10) == "back?"


async def test_a_blocking_command_given_up_drops_its_connection_and_nothing_else(
    fake: FakeRedis,
) -> None:
    async with connected(f"redis://127.0.0.1:{fake.port}") as redis:
        blocked = asyncio.ensure_future(redis.execute_blocking("HANG"))
        await asyncio.sleep(0.05)
        blocked.cancel()  # a worker pausing: its wait on the marker is cancelled
        with pytest.raises(asyncio.CancelledError):
            await blocked
        # The next command gets a new connection, which the old one's end does not touch.
        assert await redis.execute_blocking("ECHO", "next") == "next"
        assert await redis.execute("ECHO", "and the next") == "and the next"
    assert [c[0] for c in fake.connections[0]] == ["HANG"]
    assert [c[1] for c in fake.connections[1]] == ["next", "and the next"]


async def test_a_closed_connection_does_not_reconnect(redis: PipelinedRedis) -> None:
    assert await redis.execute("ECHO", "open") == "open"
    await redis.aclose()
    with pytest.raises(RedisConnectionError):
        await redis.execute("ECHO", "closed")


async def test_the_notifier_publishes_without_waiting_and_logs_a_failed_publish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def answer(command: list[str]) -> bytes | None:
        if command[0] == "PUBLISH":
            return b":1\r\n" if "ok" in command[2] else b"-ERR publishing refused\r\n"
        return default_answer(command)

    async with FakeRedis(answer) as server:
        notifier = SocketIONotifier(socket_server("", []), f"redis://127.0.0.1:{server.port}/3")
        try:
            await notifier.emit("user:1", "notification", {"message": "ok"})
            await notifier.emit("user:1", "notification", {"message": "no"})
            async with asyncio.timeout(10):
                while "not published" not in caplog.text:
                    await asyncio.sleep(0.01)
        finally:
            await notifier.close()
    [commands] = server.connections
    assert commands[0] == ["SELECT", "3"]
    published = [c for c in commands if c[0] == "PUBLISH"]
    assert [c[1] for c in published] == [CHANNEL, CHANNEL]
    first = json.loads(published[0][2])
    assert (first["method"], first["event"], first["room"]) == ("emit", "notification", "user:1")
    assert first["data"] == [{"message": "ok"}]
    assert "Socket.IO push not published (ResponseError)" in caplog.text
