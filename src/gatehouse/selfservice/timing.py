"""Answers that take the same time whichever path they took (timing equalisation)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta


@contextlib.asynccontextmanager
async def no_sooner_than(floor: timedelta) -> AsyncIterator[None]:
    """Pad the block to `floor`. Sleeping costs no CPU, so throughput is unchanged; only the
    answer waits. Failures are padded too: a refusal must not be faster than an acceptance."""
    start = time.monotonic()
    try:
        yield
    finally:
        remaining = floor.total_seconds() - (time.monotonic() - start)
        if remaining > 0:
            await asyncio.sleep(remaining)
