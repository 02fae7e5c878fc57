"""The SQL delivery log's contract, on SQLite, PostgreSQL and MariaDB alike: one row per message
id, each outcome written in the same transaction as its outbox event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.domain import events
from gatehouse.errors import Unavailable
from gatehouse.ports import DeliveryRecord
from gatehouse.storage import sql
from gatehouse.storage.schema import deliveries, outbox
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from tests.conftest import free_port

NOW = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)
MESSAGE = "11111111-2222-3333-4444-555555555555"


async def outbox_rows(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.seq))).all()
    return [dict(r._mapping) for r in rows]


async def test_records_progress_then_the_outcome_with_its_event(engine: AsyncEngine) -> None:
    log = SqlDeliveryLog(engine)
    assert await log.get(MESSAGE) is None

    await log.record(MESSAGE, "sending", "whatsapp", 1, "whatsapp: Twilio 503", None, NOW)
    assert await log.get(MESSAGE) == DeliveryRecord(
        MESSAGE, "sending", "whatsapp", 1, "whatsapp: Twilio 503", NOW, NOW
    )
    assert await outbox_rows(engine) == []  # progress reports no event

    later = NOW + timedelta(seconds=3, microseconds=7)
    event = events.user_event(
        events.MESSAGE_SENT,
        "user-9",
        {"message_id": MESSAGE, "channel": "sms", "template": "verify"},
        later,
    )
    await log.record(MESSAGE, "sent", "sms", 2, "whatsapp: Twilio 400", event, later)
    stored = await log.get(MESSAGE)
    assert stored == DeliveryRecord(MESSAGE, "sent", "sms", 2, "whatsapp: Twilio 400", NOW, later)
    assert stored is not None and stored.updated_at.tzinfo is not None
    [row] = await outbox_rows(engine)
    assert (row["id"], row["topic"], row["message_key"]) == (
        event.id,
        events.USER_EVENTS,
        "user-9",
    )
    assert json.loads(str(row["payload"])) == event.payload
    assert row["published_at"] is None  # the relay's to publish


async def test_the_record_and_its_event_commit_together(engine: AsyncEngine) -> None:
    log = SqlDeliveryLog(engine)
    event = events.user_event(events.MESSAGE_ABANDONED, "u", {"message_id": MESSAGE}, NOW)
    await log.record(MESSAGE, "sending", "sms", 1, "sms: Twilio 500", None, NOW)
    await log.record("other-message", "abandoned", "sms", 1, "x", event, NOW)
    # The same event again violates the outbox's unique id: the record must not change either.
    with pytest.raises(IntegrityError):
        await log.record(MESSAGE, "abandoned", "sms", 5, "sms: Twilio 500", event, NOW)
    still = await log.get(MESSAGE)
    assert still is not None and (still.status, still.attempts) == ("sending", 1)
    assert len(await outbox_rows(engine)) == 1


async def test_writing_the_same_values_twice_is_fine(engine: AsyncEngine) -> None:
    """An update that changes nothing still finds its row (MariaDB counts matched rows)."""
    log = SqlDeliveryLog(engine)
    for _ in range(2):
        await log.record(MESSAGE, "sending", None, 0, None, None, NOW)
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
    assert count == 1
    assert await log.get(MESSAGE) == DeliveryRecord(MESSAGE, "sending", None, 0, None, NOW, NOW)


async def test_last_error_is_kept_short(engine: AsyncEngine) -> None:
    log = SqlDeliveryLog(engine)
    await log.record(MESSAGE, "abandoned", "email", 5, "e" * 500, None, NOW)
    stored = await log.get(MESSAGE)
    assert stored is not None and stored.last_error == "e" * 200


async def test_an_unreachable_database_is_unavailable() -> None:
    engine = sql.create_engine(
        f"postgresql+asyncpg://gatehouse:gatehouse@127.0.0.1:{free_port()}/gatehouse"
    )
    log = SqlDeliveryLog(engine)
    try:
        with pytest.raises(Unavailable):
            await log.get(MESSAGE)
        with pytest.raises(Unavailable):
            await log.record(MESSAGE, "sent", "sms", 1, None, None, NOW)
    finally:
        await engine.dispose()
