"""Email over SMTP with aiosmtplib, on a few connections kept open and reused."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import time
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from gatehouse.errors import ChannelError
from gatehouse.ports import OutgoingMessage

KEEP = 4  # idle connections kept open (one courier sends one message at a time)
CHECK_AFTER = 5.0  # seconds idle after which a kept connection is checked (NOOP) before use
MAX_HEADER = 78  # RFC 5322's recommended line length: longer headers go the folding way


def _plain(value: str) -> bool:
    return value.isascii() and "\r" not in value and "\n" not in value


def headers(sender: str, message: OutgoingMessage, message_id: str) -> list[tuple[str, str]]:
    """A mail's headers, in the order both writers put them."""
    return [
        ("From", sender),
        ("To", message.to),  # validated address: CR/LF cannot reach the header
        ("Subject", message.subject),
        ("Message-ID", message_id),
        ("X-Gatehouse-Message-Id", message.id),
    ]


def fast_bytes(sender: str, message: OutgoingMessage, message_id: str) -> bytes | None:
    """The mail exactly as the email package writes it, with its headers written here when
    nothing in them needs encoding or folding (ASCII, one short line each) and the body is
    ASCII; None otherwise, and the email package does it all. Its header folding costs about
    a millisecond a mail; the body keeps its own encoding rules (7bit or quoted-printable)."""
    if not message.body.isascii():
        return None
    lines = []
    for name, value in headers(sender, message, message_id):
        line = f"{name}: {value}"
        # A message id has no space to fold at: written whole, as the email package does.
        limit = 998 if name == "Message-ID" and " " not in value else MAX_HEADER
        if not _plain(value) or len(line) > limit:
            return None
        lines.append(line)
    content = EmailMessage()
    content.set_content(message.body)
    return "\r\n".join(lines).encode("ascii") + b"\r\n" + content.as_bytes(policy=email.policy.SMTP)


class SmtpChannel:
    """`url`: smtp://[user:pass@]host:port, smtps:// for implicit TLS, `?starttls=true` to
    require STARTTLS. Connections are kept open and reused (a connect, EHLO, TLS handshake and
    login per mail would cost more than the mail), a few at most."""

    name = "email"

    def __init__(self, url: str, sender: str, timeout: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("GATEHOUSE_SMTP_URL must look like smtp://host:port or smtps://...")
        query = parse_qs(parts.query)
        self._host = parts.hostname
        self._port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._tls = parts.scheme == "smtps"
        self._starttls = query.get("starttls", ["false"])[0].lower() == "true"
        self._sender = sender
        self._timeout = timeout
        # Idle connections: (client, its event loop, when it was last used).
        self._idle: list[tuple[aiosmtplib.SMTP, asyncio.AbstractEventLoop, float]] = []

    def _mail(self, message: OutgoingMessage, message_id: str) -> EmailMessage:
        mail = EmailMessage()
        for name, value in headers(self._sender, message, message_id):
            mail[name] = value
        mail.set_content(message.body)
        return mail

    async def _client(self) -> aiosmtplib.SMTP:
        """A kept connection that still answers, else a new one. A kept connection that has been
        idle a while is checked with a NOOP first: a server that closed it meanwhile costs a
        reconnect, not a failed try (nothing was sent on it yet)."""
        loop = asyncio.get_running_loop()
        while self._idle:
            client, owner, used = self._idle.pop()
            if owner is not loop or not client.is_connected:
                self._discard(client, owner)
                continue
            if time.monotonic() - used > CHECK_AFTER:
                try:
                    await client.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    self._discard(client, owner)
                    continue
            return client
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._user,
            password=self._password,
            use_tls=self._tls,
            start_tls=True if self._starttls else None,
            timeout=self._timeout,
        )
        await client.connect()
        return client

    @staticmethod
    def _discard(client: aiosmtplib.SMTP, owner: asyncio.AbstractEventLoop) -> None:
        if not owner.is_closed():
            with contextlib.suppress(Exception):
                client.close()

    async def send(self, message: OutgoingMessage) -> None:
        message_id = make_msgid(idstring=message.id, domain="gatehouse")
        raw = fast_bytes(self._sender, message, message_id)
        client: aiosmtplib.SMTP | None = None
        try:
            client = await self._client()
            if raw is not None:
                await client.sendmail(self._sender, [message.to], raw)
            else:
                await client.send_message(self._mail(message, message_id))
        except BaseException as exc:
            # A connection that failed (or was cut by a cancellation) is in an unknown state:
            # never reused. The next try opens a new one.
            if client is not None:
                self._discard(client, asyncio.get_running_loop())
            if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                raise _channel_error(exc) from exc
            raise
        if len(self._idle) < KEEP:
            self._idle.append((client, asyncio.get_running_loop(), time.monotonic()))
        else:
            await self._quit(client)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def aclose(self) -> None:
        """QUIT the kept connections (those of this event loop; others are dropped)."""
        loop = asyncio.get_running_loop()
        idle, self._idle = self._idle, []
        for client, owner, _ in idle:
            if owner is loop and client.is_connected:
                await self._quit(client)
            else:
                self._discard(client, owner)


def _channel_error(exc: aiosmtplib.SMTPException | OSError | TimeoutError) -> ChannelError:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # 5xx: the server will never take it; 4xx: try again later.
        return ChannelError(f"SMTP {exc.code}", permanent=500 <= exc.code < 600)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Refused at RCPT (550 no such mailbox, 451 greylisting): not a response exception
        # itself, so classified by the recipient's own code rather than as "unreachable".
        code = exc.recipients[0].code if exc.recipients else 0
        return ChannelError(f"SMTP {code}", permanent=500 <= code < 600)
    return ChannelError(f"SMTP unreachable: {type(exc).__name__}", permanent=False)
