"""web/one_write.py: a response's head and body leave in one write; a head with nothing after it in
the same turn still leaves at the end of that turn; closing sends what was held. Then through a
real uvicorn server on the protocol: ordinary answers, a stream whose chunks come later, a
request body read in parts, an upgrade to a websocket, and keep-alive, each counted at the
socket's write."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest
import uvicorn
from websockets.asyncio.client import connect as ws_connect

from gatehouse.web.one_write import OneWriteHttpProtocol, _OneWrite
from tests.conftest import free_port


class Recorded:
    """A transport that keeps what it was asked to write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:  # one system call, as uvloop's
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_a_head_and_its_body_are_one_write() -> None:
    recorded = Recorded()
    wire = _OneWrite(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    wire.write(HEAD)
    assert recorded.writes == []
    wire.write(b"{}")
    assert recorded.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the turn's end finds nothing held
    assert recorded.writes == [HEAD + b"{}"]
    assert wire.get_extra_info("peername") == "info:peername"  # the rest is the transport's


async def test_a_head_alone_leaves_at_the_end_of_the_turn() -> None:
    recorded = Recorded()
    wire = _OneWrite(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    wire.write(HEAD)
    await asyncio.sleep(0)
    assert recorded.writes == [HEAD]
    wire.write(b"{}")
    assert recorded.writes == [HEAD, b"{}"]


async def test_closing_sends_what_was_held_first() -> None:
    recorded = Recorded()
    wire = _OneWrite(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    wire.write(HEAD)
    wire.close()
    assert recorded.writes == [HEAD] and recorded.closed
    await asyncio.sleep(0)
    assert recorded.writes == [HEAD]  # not twice


async def test_what_is_not_a_head_is_written_at_once() -> None:
    recorded = Recorded()
    wire = _OneWrite(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    for data in (b"\x81\x05hello", b"HTTP/1.1 200 OK\r\npartial", b"HTTP/1.1 1"):
        wire.write(data)
    assert recorded.writes == [b"\x81\x05hello", b"HTTP/1.1 200 OK\r\npartial", b"HTTP/1.1 1"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"got " + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


class Counting(OneWriteHttpProtocol):
    writes: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:
        real_write = transport.write

        def write(data: Any) -> None:
            Counting.writes.append(bytes(data))
            real_write(data)

        def writelines(parts: Any) -> None:  # one system call, as on uvloop's transport
            joined = b"".join(parts)
            Counting.writes.append(joined)
            real_write(joined)

        transport.write = write  # type: ignore[method-assign]
        transport.writelines = writelines  # type: ignore[method-assign]
        super().connection_made(transport)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", http=Counting
    )
    running = uvicorn.Server(config)
    task = asyncio.ensure_future(running.serve())
    async with asyncio.timeout(30):
        while not running.started:
            await asyncio.sleep(0.02)
    Counting.writes.clear()
    try:
        yield port
    finally:
        running.should_exit = True
        await asyncio.wait_for(task, 30)


async def exchange(
    port: int, request: bytes, done: Callable[[bytes], bool], parts: int = 1
) -> tuple[bytes, float]:
    """Sends `request` (in `parts` pieces); reads until what came is `done`: (all read, seconds
    until the first bytes came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    step = -(-len(request) // parts)
    for i in range(0, len(request), step):
        writer.write(request[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen = await reader.read(65536)
    first = loop.time() - start
    while not done(seen):
        more = await asyncio.wait_for(reader.read(65536), 10)
        assert more, seen
        seen += more
    writer.close()
    return seen, first


async def test_an_answer_leaves_the_server_in_one_write(server: int) -> None:
    request = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello"
    seen, _ = await exchange(server, request, lambda seen: b"got hello" in seen, parts=3)
    assert seen.startswith(b"HTTP/1.1 200 OK\r\n") and seen.endswith(b"\r\n\r\ngot hello")
    assert Counting.writes == [seen]


async def test_keep_alive_answers_are_one_write_each(server: int) -> None:
    one = b"GET /a HTTP/1.1\r\nhost: a\r\n\r\n"
    seen, _ = await exchange(server, one * 3, lambda seen: seen.count(b"got ") == 3)
    answers = seen.count(b"HTTP/1.1 200 OK")
    assert answers == 3
    assert len(Counting.writes) == 3 and b"".join(Counting.writes) == seen


async def test_a_stream_sends_its_head_before_its_late_first_chunk(server: int) -> None:
    request = b"GET /stream HTTP/1.1\r\nhost: a\r\n\r\n"
    seen, first = await exchange(server, request, lambda seen: seen.endswith(b"0\r\n\r\n"))
    assert first < 0.25, first  # the head did not wait 0.3 s for the chunk
    assert Counting.writes[0].startswith(b"HTTP/1.1 200 OK") and b"late" not in Counting.writes[0]
    assert b"4\r\nlate\r\n" in seen


async def test_a_websocket_upgrade_goes_through(server: int) -> None:
    async with ws_connect(f"ws://127.0.0.1:{server}/ws") as ws:
        await ws.send("hi")
        assert await ws.recv() == "echo hi"
    assert Counting.writes[0].startswith(b"HTTP/1.1 101")


async def test_a_head_request_is_answered_with_its_head_alone(server: int) -> None:
    seen, _ = await exchange(
        server, b"HEAD /a HTTP/1.1\r\nhost: a\r\n\r\n", lambda s: b"\r\n\r\n" in s
    )
    assert seen.startswith(b"HTTP/1.1 200 OK") and seen.endswith(b"\r\n\r\n")
    assert Counting.writes == [seen]  # sent at the end of the turn, nothing after it


async def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(
    server: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(
        b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hi")
    answer = await asyncio.wait_for(reader.readuntil(b"got hi"), 5)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    writer.close()
