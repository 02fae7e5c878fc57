"""SmtpChannel against a real SMTP server (aiosmtpd): mails share one kept connection; a
connection the server has closed meanwhile is replaced before anything is sent on it; a
connection on which a mail failed is never reused; closing says QUIT; and what the fast writer
leaves to the email package (a non-ASCII name) arrives intact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest

from gatehouse.courier.channels import smtp as smtp_module
from gatehouse.courier.channels.smtp import SmtpChannel
from gatehouse.errors import ChannelError
from gatehouse.ports import OutgoingMessage
from tests.conftest import body_of, free_port, quiet_mail_log

SENDER = "Gatehouse <no-reply@gatehouse.local>"


@dataclass
class Server:
    """Keeps each mail with the client port it came from; refuses the addresses in `refuse`."""

    host: str
    port: int
    mails: list[tuple[int, Message]] = field(default_factory=list)
    sessions: list[Any] = field(default_factory=list)
    quits: int = 0
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if set(envelope.rcpt_tos) & self.refuse:
            return "451 4.3.0 Try again later"
        with self.lock:
            self.mails.append((session.peer[1], message_from_bytes(envelope.content)))
            self.sessions.append(server)
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"

    def connections(self) -> int:
        return len({port for port, _ in self.mails})


@pytest.fixture
def server() -> Iterator[tuple[Server, Any]]:
    from aiosmtpd.controller import Controller

    server = Server("127.0.0.1", free_port())
    controller = Controller(server, hostname=server.host, port=server.port)
    with quiet_mail_log():
        controller.start()
        try:
            yield server, controller
        finally:
            controller.stop()  # joins the server's thread: nothing logs after it


def mail(n: int, to: str = "ada@example.com", name: str = "Ada") -> OutgoingMessage:
    return OutgoingMessage(
        id=f"message-{n}",
        channel="email",
        to=to,
        subject="Your Gatehouse verification code",
        body=f"Hello {name},\n\nYour verification code is: {n:06d}\n",
    )


async def test_mails_share_one_connection_and_closing_says_quit(
    server: tuple[Server, Any],
) -> None:
    sink, _ = server
    channel = SmtpChannel(sink.url, SENDER)
    for n in range(3):
        await channel.send(mail(n))
    assert [m["X-Gatehouse-Message-Id"] for _, m in sink.mails] == [
        "message-0",
        "message-1",
        "message-2",
    ]
    assert sink.connections() == 1
    await channel.aclose()
    assert sink.quits == 1


async def test_a_connection_the_server_closed_is_replaced_before_sending(
    server: tuple[Server, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, controller = server
    # Every kept connection is checked before use, as one idle for a while would be.
    monkeypatch.setattr(smtp_module, "CHECK_AFTER", 0.0)
    channel = SmtpChannel(sink.url, SENDER)
    await channel.send(mail(1))
    [session] = sink.sessions
    closed = threading.Event()
    controller.loop.call_soon_threadsafe(lambda: (session.transport.close(), closed.set()))
    await asyncio.to_thread(closed.wait, 10)
    await channel.send(mail(2))  # no failed try: the dead connection is noticed first
    assert [m["X-Gatehouse-Message-Id"] for _, m in sink.mails] == ["message-1", "message-2"]
    assert sink.connections() == 2
    await channel.aclose()


async def test_a_connection_on_which_a_mail_failed_is_not_reused(
    server: tuple[Server, Any],
) -> None:
    sink, _ = server
    sink.refuse = {"busy@example.com"}
    channel = SmtpChannel(sink.url, SENDER)
    await channel.send(mail(1))
    with pytest.raises(ChannelError) as failure:
        await channel.send(mail(2, to="busy@example.com"))
    assert str(failure.value) == "SMTP 451" and not failure.value.permanent
    await channel.send(mail(3))
    assert [m["X-Gatehouse-Message-Id"] for _, m in sink.mails] == ["message-1", "message-3"]
    assert sink.connections() == 2
    await channel.aclose()


async def test_an_unreachable_server_is_a_transient_failure() -> None:
    channel = SmtpChannel(f"smtp://127.0.0.1:{free_port()}", SENDER, timeout=2.0)
    with pytest.raises(ChannelError) as failure:
        await channel.send(mail(1))
    assert str(failure.value).startswith("SMTP unreachable") and not failure.value.permanent


async def test_a_name_the_fast_writer_leaves_to_the_email_package_arrives_intact(
    server: tuple[Server, Any],
) -> None:
    sink, _ = server
    channel = SmtpChannel(sink.url, SENDER)
    await channel.send(mail(1, name="Zoë Ångström"))
    await channel.send(mail(2))
    [(_, first), (_, second)] = sink.mails
    assert "Hello Zoë Ångström," in body_of(first)
    assert "Hello Ada," in body_of(second)
    assert sink.connections() == 1
    await channel.aclose()
