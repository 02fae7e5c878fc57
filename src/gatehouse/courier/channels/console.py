"""Prints each message, code included, like a development mail catcher: embedded mode only."""

from __future__ import annotations

import sys
from typing import TextIO

from gatehouse.ports import OutgoingMessage


class ConsoleChannel:
    def __init__(self, name: str = "console", stream: TextIO | None = None):
        self.name = name
        self._stream = stream

    async def send(self, message: OutgoingMessage) -> None:
        stream = self._stream or sys.stdout
        rule = "-" * 60
        subject = f"Subject: {message.subject}\n\n" if message.subject else ""  # SMS have none
        stream.write(
            f"\n{rule}\n[gatehouse courier] {message.channel} to {message.to}\n"
            f"{subject}{message.body.rstrip()}\n{rule}\n"
        )
        stream.flush()
