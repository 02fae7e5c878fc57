"""Email over SMTP with aiosmtplib: smtp://[user:pass@]host:port, smtps:// for implicit TLS,
`?starttls=true` to require STARTTLS."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from gatehouse.ports import ChannelError, OutgoingMessage


class SmtpChannel:
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

    async def send(self, message: OutgoingMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to  # validated address: CR/LF cannot reach the header
        mail["Subject"] = message.subject
        mail["Message-ID"] = make_msgid(idstring=message.id, domain="gatehouse")
        mail["X-Gatehouse-Message-Id"] = message.id
        mail.set_content(message.body)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._user,
                password=self._password,
                use_tls=self._tls,
                start_tls=True if self._starttls else None,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx: the server will never take it; 4xx: try again later.
            raise ChannelError(f"SMTP {exc.code}", permanent=500 <= exc.code < 600) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Refused at RCPT (550 no such mailbox, 451 greylisting): not a response exception
            # itself, so classified by the recipient's own code rather than as "unreachable".
            code = exc.recipients[0].code if exc.recipients else 0
            raise ChannelError(f"SMTP {code}", permanent=500 <= code < 600) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelError(f"SMTP unreachable: {type(exc).__name__}", permanent=False) from exc
