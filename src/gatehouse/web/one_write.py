"""uvicorn's HTTP protocol with a response's head and body sent in one write.

uvicorn writes a response's status line and headers, then its body: two `send` system calls a
request, and two TCP segments for the client to read. On loopback a write also carries the
receiving side's TCP work, so each cost an api worker 20-40 µs here; a refresh spent a third
of its CPU in `write` (py-spy --native). The head is held instead, and goes out with whatever
is written next in the same turn of the event loop: the body, which every response of ours
sends at once after its head. A head followed by nothing in that turn (a stream's first chunk
comes later) is sent alone at the end of the turn, so nothing waits on the next chunk."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "


class _OneWrite:
    """A transport whose head writes wait for the next write of the same turn."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            # One system call for both, without copying the body (uvloop sends a list with one
            # writev; asyncio's own transport joins it).
            self._transport.writelines((held, data))
        elif data[:9] == _HEAD and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            # A transport closing on its own (the client went away) sends nothing more: the
            # head is dropped with it, as a write to it would be.
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self._transport.writelines(lines)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, abort...)
        # is the transport's own.
        return getattr(self._transport, name)


class OneWriteHttpProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=...)`: httptools' protocol over a `_OneWrite` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]
