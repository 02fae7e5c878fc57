"""A pipelined Redis connection for the hot paths: the job workers' BullMQ scripts, the
notifier's publishes and the one-time-code store's calls (redis-py serves everything else)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Sequence
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = logging.getLogger(__name__)


class _Connection(asyncio.Protocol):
    """One TCP connection of a `PipelinedRedis`: the replies it still owes, in order."""

    def __init__(self, owner: PipelinedRedis):
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.held: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport

    def send(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.transport is None:  # lost on the way here
            future.set_exception(RedisConnectionError("Redis connection lost"))
            return future
        command = hiredis.pack_command(tuple(args))
        if self.owner._coalesce:
            if not self.held:
                loop.call_soon(self._flush)
            self.held.append(command)
        else:
            # Written at once: Redis starts on it while this process gets on with the next job.
            self.transport.write(command)
        self.waiting.append((future, loop.time()))
        return future

    def _flush(self) -> None:
        """Writes the commands held in this turn of the loop (`coalesce`) in one system call.
        A connection lost meanwhile failed them already (`connection_lost`)."""
        held, self.held = self.held, []
        if self.transport is not None and held:
            self.transport.write(b"".join(held))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiting = self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                future, _sent = waiting.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_reply_error(str(reply)))
                else:
                    future.set_result(reply)
        except Exception as exc:  # garbled, undecodable, or a reply to no command
            log.error("unreadable reply from Redis (%s); reconnecting", type(exc).__name__)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiting:
            future, _sent = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError("Redis connection lost"))
        self.owner._lost(self)

    def abort(self) -> None:
        """Drops the connection; `connection_lost` fails what is in flight."""
        if self.transport is not None:
            self.transport.abort()
        self.owner._lost(self)


class PipelinedRedis:
    """One Redis connection that many coroutines share, the way Node's ioredis works:
    a command is written at once, without waiting for the replies to the commands before it,
    and the replies, which Redis sends in order, are matched to their commands in order (parsed
    by hiredis). redis-py's client instead holds a connection for the whole round trip of each
    command, and parses replies in Python.

    A command unanswered after `timeout` seconds drops the connection; a dropped connection
    fails every command in flight with redis-py's `ConnectionError` (none is sent again: BullMQ's
    scripts are not idempotent), and the next command opens a new one, trying again for up to
    `timeout` seconds while Redis is away.

    `coalesce`: the commands sent in one turn of the event loop are held to its end and
    written together, one system call (and one read for Redis) instead of one each. For many
    independent callers (an api process's requests, which arrive together): a code check
    cost the api 16 % less CPU a verify and Redis half as much, measured. Not for one caller
    sending a command and awaiting it before the next (a job worker): holding each write
    makes Redis and the process take turns, half the throughput, measured."""

    def __init__(self, url: str, *, timeout: float = 30.0, name: str = "", coalesce: bool = False):
        self._coalesce = coalesce
        options = parse_url(url)
        self._host = str(options.get("host") or "localhost")
        self._port = int(options.get("port") or 6379)
        self._setup: list[tuple[Any, ...]] = []  # sent first on every new connection
        if options.get("password"):
            user = options.get("username")
            password = options["password"]
            self._setup.append(("AUTH", user, password) if user else ("AUTH", password))
        if int(options.get("db") or 0):
            self._setup.append(("SELECT", int(options["db"])))
        if name:
            self._setup.append(("CLIENT", "SETNAME", name))
        self._timeout = timeout
        self._tick = min(1.0, timeout / 2)  # how often the oldest command's age is checked
        self._connection: _Connection | None = None  # set once its setup commands succeeded
        self._attempt: asyncio.Future[_Connection] | None = None  # a connection being opened
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False  # by `aclose`: no more connections

    @staticmethod
    def supports(url: str) -> bool:
        """Plain TCP (`redis://`); TLS and unix sockets stay on redis-py (FastWorker then runs
        python bullmq's own calls: tests/integration/test_fast_worker_fallback.py)."""
        return urlsplit(url).scheme == "redis"

    async def execute(self, *args: Any) -> Any:
        """Sends a command and waits for its reply."""
        return await (await self.submit(*args))

    async def execute_blocking(self, *args: Any) -> Any:
        """`execute` for a blocking command (BZPOPMIN) on a connection of its own: a caller
        that stops waiting drops the connection, as redis-py does, so that the command it left
        blocked in Redis takes nothing (a job's marker) meant for the next one."""
        connection = await self._ready()
        reply = connection.send(args)
        try:
            return await reply
        except asyncio.CancelledError:
            connection.abort()
            raise

    async def submit(self, *args: Any) -> asyncio.Future[Any]:
        """Sends a command (after connecting, if need be) and hands back its reply to come,
        without waiting for it."""
        return (await self._ready()).send(args)

    async def evalsha(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Runs a script registered with redis-py (an `AsyncScript`: its sha and its text)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a Redis restarted or flushed since the script was loaded
            script.sha = await self.execute("SCRIPT", "LOAD", script.script)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _ready(self) -> _Connection:
        connection = self._connection
        if connection is not None:
            return connection
        return await self._connect()

    async def _connect(self) -> _Connection:
        # One attempt at a time, shared: every caller waiting for a connection gets its result
        # or its error. (Each waiting for the last one's end to start its own would, with Redis
        # refusing, answer the k-th of a burst only after k attempts of `timeout` seconds.)
        # Shielded: a caller that gives up does not cancel the others' attempt.
        if self._attempt is None:
            attempt = asyncio.ensure_future(self._open())
            attempt.add_done_callback(self._attempted)
            self._attempt = attempt
        return await asyncio.shield(self._attempt)

    def _attempted(self, attempt: asyncio.Future[_Connection]) -> None:
        self._attempt = None
        if not attempt.cancelled():
            attempt.exception()  # seen by its callers; not "never retrieved" when none is left

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        # Redis away (a restart, a fail-over): tried again, more and more slowly, for up to
        # `timeout` seconds (redis-py's clients retry too), then the command fails.
        deadline = loop.time() + self._timeout
        pause = 0.05
        while True:
            if self._closed:
                raise RedisConnectionError("Redis connection closed")
            connection = _Connection(self)
            try:
                await asyncio.wait_for(
                    loop.create_connection(partial(_same, connection), self._host, self._port),
                    max(0.1, deadline - loop.time()),
                )
                break
            except (OSError, TimeoutError) as exc:
                if loop.time() + pause > deadline:
                    where = f"{self._host}:{self._port}"
                    raise RedisConnectionError(f"Redis at {where}: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        if self._closed:  # closed while connecting: nothing outlives `aclose`
            connection.abort()
            raise RedisConnectionError("Redis connection closed")
        # Handed out only once AUTH and SELECT have answered OK: a command pipelined behind a
        # SELECT that failed would run in database 0, someone else's keys. Callers meanwhile
        # wait on this attempt.
        replies = [connection.send(command) for command in self._setup]
        try:
            await asyncio.wait_for(asyncio.gather(*replies), max(0.1, deadline - loop.time()))
        except TimeoutError as exc:
            connection.abort()
            raise RedisConnectionError("Redis did not answer the connection's setup") from exc
        except BaseException:
            connection.abort()
            raise
        self._connection = connection
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._tick, self._watch)
        return connection

    def _lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is None:
            self._watchdog = None
            return
        if connection.waiting and loop.time() - connection.waiting[0][1] > self._timeout:
            log.warning("Redis did not answer in %s s; reconnecting", self._timeout)
            connection.abort()
        self._watchdog = loop.call_later(self._tick, self._watch)

    async def aclose(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


def _same(connection: _Connection) -> _Connection:
    return connection


def _reply_error(message: str) -> Exception:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)
