"""A user's pending phone (migration 0005) on SQLite, PostgreSQL (SQLAlchemy and asyncpg),
MariaDB and the unit suite's fake: its columns round-trip through every read of a user (the hot
signed-in check and a session's `touch` included), its index is not unique, and only making it
the account's phone meets the unique phone index."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gatehouse.errors import Conflict
from tests.integration.conftest import BACKENDS, FAKE, Units
from tests.integration.test_sessions_contract import a_session
from tests.integration.test_sql_contract import NOW, a_user

on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)
PENDING = {
    "pending_phone_ciphertext": "v1.k." + "x" * 300,
    "pending_phone_index": "p" * 64,
    "pending_phone_expires_at": NOW + timedelta(minutes=10),
}


@on_the_fake_too
async def test_a_pending_phone_round_trips_through_every_read_of_a_user(units: Units) -> None:
    user = a_user(1, **PENDING)
    async with units() as uow:
        await uow.users.add(user)
        await uow.sessions.add(a_session(1, user.id))
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get(user.id) == user
        assert await uow.users.get_signed_in(user.id, "s-1") == user
        touched = await uow.sessions.touch("s-1", NOW + timedelta(seconds=5))
        assert touched is not None and touched[1] == user
    stored = touched[1].pending_phone_expires_at
    assert stored is not None and stored.tzinfo is not None
    cleared = user.with_changes(
        pending_phone_ciphertext=None, pending_phone_index=None, pending_phone_expires_at=None
    )
    async with units() as uow:
        await uow.users.update(cleared)
        await uow.commit()
    async with units() as uow:
        assert await uow.users.get(user.id) == cleared


@on_the_fake_too
async def test_many_may_ask_for_one_number_and_one_may_hold_it(units: Units) -> None:
    first, second = a_user(1, **PENDING), a_user(2, **PENDING)
    async with units() as uow:
        await uow.users.add(first)
        await uow.users.add(second)  # the same number pending twice: no conflict
        await uow.commit()
    index = PENDING["pending_phone_index"]
    proven = first.with_changes(phone_index=index, pending_phone_index=None)
    async with units() as uow:
        await uow.users.update(proven)
        await uow.commit()
    with pytest.raises(Conflict):
        async with units() as uow:
            await uow.users.update(second.with_changes(phone_index=index))
            await uow.commit()
    async with units() as uow:
        assert await uow.users.get(second.id) == second  # nothing half written
        assert await uow.users.get_by_phone_index(str(index)) == proven
