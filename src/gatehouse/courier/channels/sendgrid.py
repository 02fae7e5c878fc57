"""Email through the SendGrid v3 Mail Send API, with the official `sendgrid` SDK."""

from __future__ import annotations

import asyncio
import logging

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, From, Mail, To

from gatehouse.courier.channels.http_status import is_permanent
from gatehouse.errors import ChannelError
from gatehouse.ports import OutgoingMessage

log = logging.getLogger(__name__)


class SendGridChannel:
    """The SDK is synchronous: each send runs in a worker thread, bounded by the HTTP timeout."""

    name = "email"

    def __init__(
        self,
        api_key: str,
        sender: str,
        *,
        base_url: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
    ):
        if not api_key:
            raise ValueError("SendGrid needs an API key (GATEHOUSE_SENDGRID_API_KEY)")
        self._client = SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
        self._client.client.timeout = timeout  # handed down to every request it builds
        self._sender = sender
        # Its DEBUG lines print the whole payload, code included: never let them through.
        logging.getLogger("python_http_client.client").setLevel(logging.INFO)

    async def send(self, message: OutgoingMessage) -> None:
        mail = Mail(
            from_email=From(self._sender),
            to_emails=To(message.to),
            subject=message.subject,
            plain_text_content=message.body,
        )
        mail.custom_arg = CustomArg("gatehouse_message_id", message.id)
        try:
            body = mail.get()
        except (KeyError, ValueError, TypeError, AttributeError):  # e.g. not an email address
            raise ChannelError("SendGrid: invalid message", permanent=True) from None
        try:
            response = await asyncio.to_thread(self._client.send, body)
        except HTTPError as exc:
            status = int(exc.status_code)
            raise ChannelError(f"SendGrid {status}", permanent=is_permanent(status)) from None
        except OSError as exc:  # refused, unreachable, timed out (urllib)
            raise ChannelError(
                f"SendGrid unreachable: {type(exc).__name__}", permanent=False
            ) from None
        log.info(
            "email message %s accepted by SendGrid: status=%s id=%s",
            message.id,
            response.status_code,
            response.headers.get("X-Message-Id"),
        )
