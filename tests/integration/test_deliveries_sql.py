"""The SQL delivery log's contract, on SQLite, PostgreSQL and MariaDB alike: one row per message
id, each outcome written in the same transaction as its outbox event. The tests written against
the `DeliveryLog` port also run on the `MemoryDeliveryLog` fake of the courier's unit tests
(`[fake]`), so that it cannot drift from the real thing; the outage test is SQL's own."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError, StatementError

from gatehouse.domain import events
from gatehouse.errors import Unavailable
from gatehouse.ports import DeliveryLog, DeliveryRecord, OutboxStore
from gatehouse.storage import sql
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from tests.conftest import free_port
from tests.integration.conftest import NOW, RowCount, on_the_fake_too, published

MESSAGE = "11111111-2222-3333-4444-555555555555"


@on_the_fake_too
async def test_records_progress_then_the_outcome_with_its_event(
    log: DeliveryLog, outbox_store: OutboxStore
) -> None:
    assert await log.get(MESSAGE) is None

    await log.record(MESSAGE, "sending", "whatsapp", 1, "whatsapp: Twilio 503", None, NOW)
    assert await log.get(MESSAGE) == DeliveryRecord(
        MESSAGE, "sending", "whatsapp", 1, "whatsapp: Twilio 503", NOW, NOW
    )
    assert await outbox_store.pending_count() == 0  # progress reports no event

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
    assert await outbox_store.pending_count() == 1  # the relay's to publish
    # Its id, topic, key, payload (through JSON in SQL) and time, as the courier made them.
    assert await published(outbox_store) == [event]


@on_the_fake_too
async def test_the_record_and_its_event_commit_together(
    log: DeliveryLog, outbox_store: OutboxStore
) -> None:
    event = events.user_event(events.MESSAGE_ABANDONED, "u", {"message_id": MESSAGE}, NOW)
    await log.record(MESSAGE, "sending", "sms", 1, "sms: Twilio 500", None, NOW)
    await log.record("other-message", "abandoned", "sms", 1, "x", event, NOW)
    # The same event again violates the outbox's unique id: the record must not change either.
    with pytest.raises(IntegrityError):
        await log.record(MESSAGE, "abandoned", "sms", 5, "sms: Twilio 500", event, NOW)
    still = await log.get(MESSAGE)
    assert still is not None and (still.status, still.attempts) == ("sending", 1)
    assert await outbox_store.pending_count() == 1


@on_the_fake_too
async def test_writing_the_same_values_twice_is_fine(
    log: DeliveryLog, delivery_rows: RowCount
) -> None:
    """An update that changes nothing still finds its row (MariaDB counts matched rows)."""
    for _ in range(2):
        assert await log.record(MESSAGE, "sending", None, 0, None, None, NOW)
    assert await delivery_rows() == 1
    assert await log.get(MESSAGE) == DeliveryRecord(MESSAGE, "sending", None, 0, None, NOW, NOW)


@on_the_fake_too
async def test_last_error_is_kept_short_and_an_empty_one_is_none(log: DeliveryLog) -> None:
    await log.record(MESSAGE, "abandoned", "email", 5, "e" * 500, None, NOW)
    stored = await log.get(MESSAGE)
    assert stored is not None and stored.last_error == "e" * 200
    await log.record("other-message", "sending", "email", 1, "", None, NOW)
    other = await log.get("other-message")
    assert other is not None and other.last_error is None


@on_the_fake_too
async def test_times_are_aware_and_come_back_in_utc(log: DeliveryLog) -> None:
    # SQL stores naive UTC and refuses a naive time; it returns every time in UTC.
    naive = NOW.replace(tzinfo=None)
    refused = pytest.raises((StatementError, ValueError), match="naive datetime")
    with refused:
        await log.claim(MESSAGE, "a", naive, naive + timedelta(seconds=60))
    with refused:
        await log.record(MESSAGE, "sending", "sms", 1, None, None, naive)
    with refused:
        await log.release(MESSAGE, "a", naive)
    assert await log.get(MESSAGE) is None

    east = NOW.astimezone(timezone(timedelta(hours=1)))  # the same instant, at UTC+1
    assert (await log.claim(MESSAGE, "a", east, east + timedelta(seconds=60))).won
    assert await log.record(MESSAGE, "sending", "sms", 1, None, None, east, "a")
    stored = await log.get(MESSAGE)
    assert stored is not None and stored.lease_until is not None
    times = (stored.created_at, stored.updated_at, stored.lease_until)
    assert times == (NOW, NOW, NOW + timedelta(seconds=60))
    assert [t.tzinfo for t in times] == [UTC, UTC, UTC]


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
