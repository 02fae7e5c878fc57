"""WhatsApp through Twilio: the same Messages API as SMS, with `whatsapp:` addresses."""

from __future__ import annotations

from gatehouse.courier.channels.twilio_sms import TwilioSmsChannel


class TwilioWhatsAppChannel(TwilioSmsChannel):
    """`from_number` may be given with or without its `whatsapp:` prefix."""

    name = "whatsapp"
    prefix = "whatsapp:"
