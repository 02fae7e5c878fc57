"""The signed-in cache (selfservice/sessions/cache.py) and the units of work that announce what
would make it stale (invalidating.py): a profile read is answered without the database while the
channel is heard, and every change that ends a session or alters its user, through every flow
that makes one, empties it on every process before the change commits. An announcement that
cannot be made refuses the change (nothing written); a lost channel stops the cache."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gatehouse.admin import users as admin
from gatehouse.domain.users import User
from gatehouse.errors import InvalidToken, Unavailable
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.sessions import manage
from gatehouse.selfservice.sessions import rotation as session
from gatehouse.selfservice.sessions.cache import SignedInCache, session_key, user_key
from gatehouse.selfservice.sessions.flow import Session
from gatehouse.selfservice.sessions.invalidating import invalidating_units
from tests.fakes import MemoryDatabase

from .test_flows_session import PASSWORD, Account, make_account

NEW_PASSWORD = "an entirely new horse battery"


class Tick:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_user(user_id: str = "u1", name: str = "Ada") -> User:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return User(
        id=user_id,
        name=name,
        email=f"{user_id}@example.com",
        password_hash="x",
        phone_ciphertext=None,
        phone_index=None,
        image=None,
        email_verified_at=at,
        created_at=at,
        updated_at=at,
    )


class TestTheCache:
    def cache(self, tick: Tick) -> SignedInCache:
        made = SignedInCache(ttl_seconds=30, stale_after=1.5, hold_seconds=15, clock=tick)
        made.heard()
        return made

    def test_nothing_is_kept_or_answered_before_the_channel_is_heard(self) -> None:
        tick = Tick()
        cache = SignedInCache(clock=tick)
        cache.put(cache.ticket(), "s1", a_user())
        assert len(cache) == 0 and cache.get("s1", "u1") is None
        cache.heard()
        cache.put(cache.ticket(), "s1", a_user())
        assert cache.get("s1", "u1") == a_user()

    def test_an_entry_answers_only_for_its_own_user_and_within_its_ttl(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.put(cache.ticket(), "s1", a_user())
        assert cache.get("s1", "someone-else") is None
        for _ in range(31):  # heard every second, but the entry is 31 s old
            tick.now += 1
            cache.heard()
        assert cache.get("s1", "u1") is None

    def test_silence_longer_than_stale_after_stops_it_and_then_empties_it(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.put(cache.ticket(), "s1", a_user())
        tick.now += 1.4
        assert cache.get("s1", "u1") is not None
        tick.now += 0.2  # 1.6 s without a word: announcements may have been missed
        assert cache.get("s1", "u1") is None
        cache.put(cache.ticket(), "s2", a_user())  # not stored while deaf
        cache.heard()  # back, after a gap: everything kept before it is gone
        assert cache.get("s1", "u1") is None and len(cache) == 0

    def test_lost_empties_it_at_once(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.put(cache.ticket(), "s1", a_user())
        cache.lost()
        assert len(cache) == 0 and not cache.live()

    def test_a_hold_drops_the_users_entries_and_stores_none_until_released(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.put(cache.ticket(), "s1", a_user())
        cache.put(cache.ticket(), "s2", a_user())
        cache.put(cache.ticket(), "t1", a_user("u2"))
        cache.hold([user_key("u1")])
        assert cache.get("s1", "u1") is None and cache.get("s2", "u1") is None
        assert cache.get("t1", "u2") is not None  # another user's stays
        cache.put(cache.ticket(), "s1", a_user())  # a read between hold and commit
        assert cache.get("s1", "u1") is None
        cache.release([user_key("u1")])
        cache.put(cache.ticket(), "s1", a_user(name="Ada Lovelace"))
        assert cache.get("s1", "u1") == a_user(name="Ada Lovelace")

    def test_a_hold_whose_release_was_lost_runs_out(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.hold([session_key("s1")])
        for _ in range(16):
            tick.now += 1
            cache.heard()
        cache.put(cache.ticket(), "s1", a_user())
        assert cache.get("s1", "u1") is not None

    def test_a_read_that_raced_with_any_announcement_is_not_stored(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        ticket = cache.ticket()  # the read starts ...
        cache.release([user_key("u1")])  # ... a change of u1 committed meanwhile ...
        cache.put(ticket, "s1", a_user())  # ... and the read's (maybe older) row is not kept
        assert cache.get("s1", "u1") is None

    def test_a_session_key_drops_that_session_only(self) -> None:
        tick = Tick()
        cache = self.cache(tick)
        cache.put(cache.ticket(), "s1", a_user())
        cache.put(cache.ticket(), "s2", a_user())
        cache.release([session_key("s1")])
        assert cache.get("s1", "u1") is None and cache.get("s2", "u1") is not None
        cache.release([user_key("u1")])
        assert len(cache) == 0

    def test_it_is_bounded(self) -> None:
        tick = Tick()
        cache = SignedInCache(max_entries=3, clock=tick)
        cache.heard()
        for n in range(5):
            cache.put(cache.ticket(), f"s{n}", a_user(f"u{n}"))
        assert len(cache) == 3
        assert cache.get("s0", "u0") is None and cache.get("s4", "u4") is not None


class Channel:
    """Every process's cache on one in-process channel; `failing` makes announcements fail
    before (`hold`) or after (`release`) the commit."""

    def __init__(self, *caches: SignedInCache):
        self.caches = list(caches)
        self.heard: list[tuple[bool, frozenset[str]]] = []
        self.failing: set[bool] = set()

    async def announce(self, keys: Collection[str], *, committed: bool) -> None:
        if committed in self.failing:
            raise Unavailable()
        self.heard.append((committed, frozenset(keys)))
        for cache in self.caches:
            (cache.release if committed else cache.hold)(keys)


@pytest.fixture
def tick() -> Tick:
    return Tick()


@pytest.fixture
def nodes(tick: Tick) -> tuple[SignedInCache, SignedInCache]:
    made = (SignedInCache(clock=tick), SignedInCache(clock=tick))
    for cache in made:
        cache.heard()
    return made


@pytest.fixture
def channel(nodes: tuple[SignedInCache, SignedInCache]) -> Channel:
    return Channel(*nodes)


@pytest.fixture
def node1(
    ctx: FlowContext, db: MemoryDatabase, nodes: tuple[SignedInCache, ...], channel: Channel
) -> FlowContext:
    return replace(ctx, uow=invalidating_units(db.uow, channel), signed_in=nodes[0])


@pytest.fixture
def node2(
    ctx: FlowContext, db: MemoryDatabase, nodes: tuple[SignedInCache, ...], channel: Channel
) -> FlowContext:
    return replace(ctx, uow=invalidating_units(db.uow, channel), signed_in=nodes[1])


async def warmed(node: FlowContext, token: str) -> None:
    await profile.read(node, token=token)
    assert node.signed_in is not None and len(node.signed_in) >= 1


class TestFlowsOverTheCache:
    async def test_a_warm_read_does_not_ask_the_database(
        self, node2: FlowContext, db: MemoryDatabase
    ) -> None:
        account = await make_account(node2, db)
        opened = await login_flow.login(node2, email=account.email, password=PASSWORD)
        await warmed(node2, opened.token)
        db.tables.users.pop(account.id)  # behind the flows' back: the cache does not know
        assert (await profile.read(node2, token=opened.token))["id"] == account.id

    async def test_a_login_or_a_refresh_announces_nothing(
        self, node1: FlowContext, db: MemoryDatabase, channel: Channel
    ) -> None:
        account = await make_account(node1, db)
        opened = await login_flow.login(node1, email=account.email, password=PASSWORD)
        await session.refresh(node1, refresh_token=opened.refresh_token)
        assert channel.heard == []

    @pytest.mark.parametrize(
        "change",
        ["logout", "logout_everywhere", "session_deleted", "password", "disable", "deleted"],
    )
    async def test_every_ending_of_a_session_through_node1_ends_it_on_node2(
        self, change: str, node1: FlowContext, node2: FlowContext, db: MemoryDatabase
    ) -> None:
        account = await make_account(node1, db)
        victim = await login_flow.login(node1, email=account.email, password=PASSWORD)
        other = await login_flow.login(node1, email=account.email, password=PASSWORD)
        await warmed(node2, victim.token)
        await end(change, node1, account, victim, other)
        with pytest.raises(InvalidToken):
            await profile.read(node2, token=victim.token)

    async def test_a_profile_update_on_node1_is_read_at_once_on_node2(
        self, node1: FlowContext, node2: FlowContext, db: MemoryDatabase
    ) -> None:
        account = await make_account(node1, db)
        opened = await login_flow.login(node1, email=account.email, password=PASSWORD)
        await warmed(node2, opened.token)
        await profile.update(node1, token=opened.token, name="Ada Lovelace")
        assert (await profile.read(node2, token=opened.token))["name"] == "Ada Lovelace"

    async def test_a_change_that_cannot_be_announced_is_not_made(
        self, node1: FlowContext, node2: FlowContext, db: MemoryDatabase, channel: Channel
    ) -> None:
        account = await make_account(node1, db)
        opened = await login_flow.login(node1, email=account.email, password=PASSWORD)
        await warmed(node2, opened.token)
        channel.failing = {False}
        with pytest.raises(Unavailable):
            await session.logout(node1, refresh_token=opened.refresh_token)
        with pytest.raises(Unavailable):
            await profile.update(node1, token=opened.token, name="Not Saved")
        channel.failing = set()
        assert node2.signed_in is not None
        node2.signed_in.clear()  # what the database says, not what was cached
        view = await profile.read(node2, token=opened.token)
        assert view["name"] == "Ada"  # the update was not written, the session still lives

    async def test_a_release_lost_after_the_commit_is_covered_by_the_hold(
        self, node1: FlowContext, node2: FlowContext, db: MemoryDatabase, channel: Channel
    ) -> None:
        account = await make_account(node1, db)
        opened = await login_flow.login(node1, email=account.email, password=PASSWORD)
        await warmed(node2, opened.token)
        channel.failing = {True}
        await profile.update(node1, token=opened.token, name="Ada Lovelace")  # answered
        assert (await profile.read(node2, token=opened.token))["name"] == "Ada Lovelace"
        assert node2.signed_in is not None and len(node2.signed_in) == 0  # not stored: held


async def end(
    change: str, node1: FlowContext, account: Account, victim: Session, other: Session
) -> None:
    """Ends `victim`'s session through node 1, as `change` does (`other`: another session of
    the same account, where the change is made from a second device)."""
    sid = node1.tokens.verify(victim.token, node1.clock()).sid
    if change == "logout":
        await session.logout(node1, refresh_token=victim.refresh_token)
    elif change == "logout_everywhere":
        await session.logout(node1, refresh_token=other.refresh_token, everywhere=True)
    elif change == "session_deleted":
        await manage.revoke_session(node1, token=other.token, session_id=sid)
    elif change == "password":
        changed = {"password": NEW_PASSWORD, "current_password": PASSWORD}
        await profile.update(node1, token=other.token, **changed)
    elif change == "disable":
        await admin.disable(node1, account.id, "support@example.com")
    elif change == "deleted":
        await profile.delete(node1, token=other.token, password=PASSWORD)
