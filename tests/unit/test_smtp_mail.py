"""courier.channels.smtp: the mail written without the email package's header folding is,
byte for byte, what the email package writes; anything that needs encoding or folding is left
to the email package."""

from __future__ import annotations

from email.utils import make_msgid

import pytest
from aiosmtplib.email import flatten_message

from gatehouse.courier.channels.smtp import SmtpChannel, fast_bytes
from gatehouse.courier.templates import Templates
from gatehouse.ports import OutgoingMessage

SENDER = "Gatehouse <no-reply@gatehouse.local>"
MESSAGE_ID = "0192f0a0-0000-7000-8000-000000000000"


def message(subject: str, body: str, to: str = "ada@example.com") -> OutgoingMessage:
    return OutgoingMessage(id=MESSAGE_ID, channel="email", to=to, subject=subject, body=body)


def email_package(mail: OutgoingMessage, message_id: str) -> bytes:
    """What SmtpChannel sent before: an EmailMessage flattened by aiosmtplib."""
    channel = SmtpChannel("smtp://127.0.0.1:25", SENDER)
    return flatten_message(channel._mail(mail, message_id), cte_type="8bit")


@pytest.mark.parametrize("template", ["verify-email", "account-exists", "password-reset", "verify"])
def test_every_template_is_written_exactly_as_the_email_package_writes_it(template: str) -> None:
    subject, body = Templates().render(
        template, {"code": "123456", "name": "Ada Lovelace", "minutes": "10"}
    )
    mail = message(subject, body)
    message_id = make_msgid(idstring=MESSAGE_ID, domain="gatehouse")
    fast = fast_bytes(SENDER, mail, message_id)
    assert fast is not None
    assert fast == email_package(mail, message_id)


@pytest.mark.parametrize(
    ("subject", "body", "to"),
    [
        ("Your code", "Hello Zoë,\n\nYour code is: 123456\n", "ada@example.com"),
        ("Votre code — Gatehouse", "Your code is: 123456\n", "ada@example.com"),
        (
            "A subject long enough that the email package folds it over two lines " * 2,
            "x\n",
            "a@b.c",
        ),
        ("Your code", "Your code is: 123456\n", "zoë@example.com"),
        ("Injected\r\nBcc: eve@example.com", "x\n", "ada@example.com"),
    ],
    ids=["non-ascii-body", "non-ascii-subject", "long-subject", "non-ascii-address", "crlf"],
)
def test_what_needs_encoding_or_folding_is_left_to_the_email_package(
    subject: str, body: str, to: str
) -> None:
    assert fast_bytes(SENDER, message(subject, body, to), "<id@gatehouse>") is None
