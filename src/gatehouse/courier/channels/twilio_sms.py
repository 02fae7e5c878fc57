"""SMS through Twilio's Programmable Messaging API, with the official `twilio` SDK."""

from __future__ import annotations

import asyncio
import logging

from gatehouse.courier.channels.http_status import is_permanent
from gatehouse.errors import ChannelError
from gatehouse.ports import OutgoingMessage

log = logging.getLogger(__name__)


class TwilioSmsChannel:
    """Sends from `from_number` when given, else through the Messaging Service (which then picks
    the sender). The recipient and the body, a code, are never logged: only ids and statuses.
    The SDK is synchronous: each send runs in a worker thread, bounded by the HTTP timeout."""

    name = "sms"
    prefix = ""  # WhatsApp addresses are `whatsapp:+E164`

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str = "",
        messaging_service_sid: str = "",
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
    ):
        if not (account_sid and auth_token):
            raise ValueError("Twilio needs an account SID and an auth token")
        if not (from_number or messaging_service_sid):
            raise ValueError("Twilio needs a from number or a Messaging Service SID")
        # Imported here, not at the top: `requests`, under the SDK, opens a socket at import
        # (an IPv6 probe), and importing a module must do no work.
        from twilio.base.exceptions import TwilioException, TwilioRestException
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        self._rest_error: type[Exception] = TwilioRestException
        self._unreachable: tuple[type[Exception], ...] = (TwilioException, OSError)
        # An explicit environment: TWILIO_EDGE/TWILIO_REGION from the process environment would
        # otherwise rewrite the configured base URL's host.
        self._client = Client(
            account_sid,
            auth_token,
            http_client=TwilioHttpClient(timeout=timeout),
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )
        # The SDK's domain for api.twilio.com; every Messages request is built on its base URL.
        self._client.api.base_url = base_url.rstrip("/")
        self._from = self._address(from_number) if from_number else None
        self._service = messaging_service_sid or None

    def _address(self, number: str) -> str:
        return number if number.startswith(self.prefix) else f"{self.prefix}{number}"

    async def send(self, message: OutgoingMessage) -> None:
        fields: dict[str, str] = {"to": self._address(message.to), "body": message.body}
        if self._from:
            fields["from_"] = self._from
        else:
            fields["messaging_service_sid"] = str(self._service)
        try:
            sent = await asyncio.to_thread(self._client.messages.create, **fields)
        except self._rest_error as exc:
            # Twilio's own message may quote the number: keep only the statuses. `from None`
            # keeps it out of any traceback that would be logged further up.
            status = int(getattr(exc, "status", 0) or 0)
            code = getattr(exc, "code", None)
            detail = f" error {code}" if code else ""
            raise ChannelError(f"Twilio {status}{detail}", permanent=is_permanent(status)) from None
        except self._unreachable as exc:  # requests' timeouts and refusals are OSErrors
            raise ChannelError(
                f"Twilio unreachable: {type(exc).__name__}", permanent=False
            ) from None
        log.info(
            "%s message %s accepted by Twilio: sid=%s status=%s",
            self.name,
            message.id,
            sent.sid,
            sent.status,
        )
