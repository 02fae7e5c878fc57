"""The login, sessions and profile flows on test doubles: login, refresh rotation with reuse
detection, logout, and reading the profile with an access token."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.domain import events
from gatehouse.domain.crypto import SigningKey
from gatehouse.domain.sessions import SessionRecord
from gatehouse.domain.tokens import AccessTokens, hash_refresh_token, read_session_refresh
from gatehouse.errors import InvalidCredentials, InvalidToken
from gatehouse.security.hashing import Argon2Hasher
from gatehouse.selfservice.context import FlowContext, Policy
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.sessions import rotation as session
from tests.fakes import MemoryDatabase

from .helpers import FakeClock, last_code, outbox_messages, user_events

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    password: str


async def make_account(
    ctx: FlowContext, db: MemoryDatabase, email: str = EMAIL, phone: str | None = None
) -> Account:
    await registration.register(ctx, name="Ada", email=email, password=PASSWORD, phone=phone)
    view = await registration.verify(ctx, email=email, otp=last_code(db, ctx.keyring, email))
    return Account(view["id"], email, PASSWORD)


@pytest.fixture
async def account(ctx: FlowContext, db: MemoryDatabase) -> Account:
    return await make_account(ctx, db)


def stored(db: MemoryDatabase, ctx: FlowContext, refresh_token: str) -> SessionRecord:
    """The session row a refresh token names (whichever of its generations it is)."""
    token = read_session_refresh(ctx.secrets.token_key, refresh_token)
    assert token is not None, "not a token of this service"
    return db.tables.sessions[token.session_id]


class TestLogin:
    async def test_success(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        before = len(outbox_messages(db))
        opened = await login_flow.login(ctx, email="Ada@Example.COM", password=PASSWORD)

        claims = ctx.tokens.verify(opened.token, clock.now)
        assert claims.sub == account.id
        assert opened.user["id"] == account.id
        assert "password_hash" not in opened.user
        assert opened.expires_in == 15 * 60
        data = opened.as_data()
        assert data["token"] == opened.token
        assert data["refresh_token"] == opened.refresh_token
        assert data["user"] == opened.user

        assert opened.refresh_token.startswith("rs_")
        row = stored(db, ctx, opened.refresh_token)
        assert row.user_id == account.id
        assert row.id == claims.sid
        assert row.refresh_generation == 1
        assert row.refresh_hash == hash_refresh_token(ctx.secrets.token_key, opened.refresh_token)
        assert opened.refresh_token not in str(row)  # kept hashed, never as given
        assert row.refresh_expires_at == clock.now + ctx.policy.refresh_ttl
        assert row.expires_at == clock.now + ctx.policy.refresh_family_max
        assert row.revoked_at is None
        assert db.tables.tokens == {}  # no row of the old kind

        new_rows = outbox_messages(db)[before:]
        assert [m.payload["type"] for m in new_rows] == [events.LOGGED_IN]
        assert new_rows[0].key == account.id
        assert PASSWORD not in str(new_rows[0].payload)

    async def test_each_login_opens_its_own_session(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        one = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        two = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        assert one.refresh_token != two.refresh_token
        assert (
            ctx.tokens.verify(one.token, clock.now).sid
            != ctx.tokens.verify(two.token, clock.now).sid
        )

    async def test_wrong_password(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        before = len(outbox_messages(db))
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email=EMAIL, password="wrong password")
        new_rows = outbox_messages(db)[before:]
        assert [m.payload["type"] for m in new_rows] == [events.LOGIN_FAILED]
        assert new_rows[0].key == account.id
        assert "wrong password" not in str(new_rows[0].payload)
        assert db.tables.tokens == {}

    async def test_unknown_email(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        with pytest.raises(InvalidCredentials) as unknown:
            await login_flow.login(ctx, email="nobody@example.com", password=PASSWORD)
        assert outbox_messages(db) == []
        assert db.tables.tokens == {}
        await make_account(ctx, db)
        with pytest.raises(InvalidCredentials) as wrong:
            await login_flow.login(ctx, email=EMAIL, password="wrong password")
        # One answer for both: nothing tells an unknown account from a wrong password.
        assert (unknown.value.code, unknown.value.message) == (
            wrong.value.code,
            wrong.value.message,
        )

    async def test_unknown_email_spends_a_hash(
        self, ctx: FlowContext, hasher: Argon2Hasher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        burned: list[str] = []
        original = hasher.burn

        async def spy(password: str) -> None:
            burned.append(password)
            await original(password)

        monkeypatch.setattr(hasher, "burn", spy)
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email="nobody@example.com", password=PASSWORD)
        assert burned == [PASSWORD]

    async def test_pending_registration_cannot_log_in(
        self, ctx: FlowContext, db: MemoryDatabase
    ) -> None:
        await registration.register(ctx, name="Ada", email=EMAIL, password=PASSWORD)
        with pytest.raises(InvalidCredentials):
            await login_flow.login(ctx, email=EMAIL, password=PASSWORD)

    async def test_rehash_when_parameters_were_raised(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        stronger = Argon2Hasher(memory_kib=2048, time_cost=1, parallelism=1, workers=1)
        try:
            await login_flow.login(replace(ctx, hasher=stronger), email=EMAIL, password=PASSWORD)
        finally:
            stronger.close()
        assert db.tables.users[account.id].password_hash.startswith("$argon2id$v=19$m=2048,")
        assert (await login_flow.login(ctx, email=EMAIL, password=PASSWORD)).user[
            "id"
        ] == account.id


class TestRefresh:
    async def test_rotation(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        first = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        second = await session.refresh(ctx, refresh_token=first.refresh_token)

        assert second.refresh_token != first.refresh_token
        assert second.token != first.token
        row = stored(db, ctx, second.refresh_token)
        assert stored(db, ctx, first.refresh_token) is row  # one session, one row
        assert row.refresh_generation == 2
        assert row.refresh_hash == hash_refresh_token(ctx.secrets.token_key, second.refresh_token)
        assert row.last_used_at == clock.now
        assert row.expires_at == clock.now + ctx.policy.refresh_family_max  # never moves
        claims = ctx.tokens.verify(second.token, clock.now)
        assert (claims.sub, claims.sid) == (account.id, row.id)
        third = await session.refresh(ctx, refresh_token=second.refresh_token)
        assert ctx.tokens.verify(third.token, clock.now).sub == account.id
        assert stored(db, ctx, third.refresh_token).refresh_generation == 3

    async def test_reuse_revokes_the_whole_family(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        first = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        second = await session.refresh(ctx, refresh_token=first.refresh_token)
        family = stored(db, ctx, first.refresh_token).id
        before = len(outbox_messages(db))

        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=first.refresh_token)  # replayed

        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=second.refresh_token)
        row = db.tables.sessions[family]
        assert (row.revoked_at, row.revoked_reason) == (clock.now, "refresh_token_reuse")
        revoked = [m for m in outbox_messages(db)[before:]]
        assert [m.payload["type"] for m in revoked] == [events.SESSION_REVOKED]
        assert revoked[0].key == account.id
        assert revoked[0].payload["data"]["reason"] == "refresh_token_reuse"
        assert revoked[0].payload["data"]["session_id"] == family

    async def test_reuse_leaves_other_sessions_alone(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        phone = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        laptop = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        await session.refresh(ctx, refresh_token=phone.refresh_token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=phone.refresh_token)
        assert (await session.refresh(ctx, refresh_token=laptop.refresh_token)).user["id"]

    @pytest.mark.parametrize("token", ["", "rt_unknown", "not even close"])
    async def test_unknown_token(self, ctx: FlowContext, db: MemoryDatabase, token: str) -> None:
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=token)
        assert outbox_messages(db) == []

    async def test_expired_token(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        short = replace(ctx, policy=Policy(refresh_ttl=timedelta(minutes=5)))
        opened = await login_flow.login(short, email=EMAIL, password=PASSWORD)
        clock.advance(5 * 60)
        with pytest.raises(InvalidToken):
            await session.refresh(short, refresh_token=opened.refresh_token)
        assert stored(db, ctx, opened.refresh_token).refresh_generation == 1  # rolled back

    async def test_family_lifetime_caps_every_rotation(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        capped = replace(
            ctx,
            policy=Policy(
                refresh_ttl=timedelta(minutes=5), refresh_family_max=timedelta(minutes=6)
            ),
        )
        opened = await login_flow.login(capped, email=EMAIL, password=PASSWORD)
        family_end = stored(db, ctx, opened.refresh_token).expires_at
        clock.advance(4 * 60)
        rotated = await session.refresh(capped, refresh_token=opened.refresh_token)
        assert stored(db, ctx, rotated.refresh_token).refresh_expires_at == family_end
        clock.advance(2 * 60)
        with pytest.raises(InvalidToken):
            await session.refresh(capped, refresh_token=rotated.refresh_token)

    async def test_deleted_user(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        async with ctx.uow() as uow:
            await uow.users.delete(account.id)
            await uow.commit()
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)


class TestLogout:
    async def test_revokes_the_session(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, clock: FakeClock
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        other = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        before = len(outbox_messages(db))

        await session.logout(ctx, refresh_token=opened.refresh_token)

        assert stored(db, ctx, opened.refresh_token).revoked_at == clock.now
        assert stored(db, ctx, opened.refresh_token).revoked_reason == "logout"
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=opened.refresh_token)
        [event] = outbox_messages(db)[before:]
        assert event.payload["type"] == events.SESSION_REVOKED
        assert event.payload["data"]["reason"] == "logout"
        assert event.key == account.id
        # The other session is still alive.
        assert (await session.refresh(ctx, refresh_token=other.refresh_token)).user["id"]

    async def test_revokes_tokens_rotated_from_it(self, ctx: FlowContext, account: Account) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        rotated = await session.refresh(ctx, refresh_token=opened.refresh_token)
        await session.logout(ctx, refresh_token=opened.refresh_token)
        with pytest.raises(InvalidToken):
            await session.refresh(ctx, refresh_token=rotated.refresh_token)

    async def test_unknown_or_repeated_logout_is_quiet(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        before = len(outbox_messages(db))
        await session.logout(ctx, refresh_token="rt_unknown")
        assert len(outbox_messages(db)) == before
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        await session.logout(ctx, refresh_token=opened.refresh_token)
        after_first = len(outbox_messages(db))
        await session.logout(ctx, refresh_token=opened.refresh_token)
        assert len(outbox_messages(db)) == after_first
        assert len(user_events(db, events.SESSION_REVOKED)) == 1


class TestProfile:
    async def test_read(self, ctx: FlowContext, db: MemoryDatabase) -> None:
        account = await make_account(ctx, db, phone="+44 20 7946 0958")
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        view = await profile.read(ctx, token=opened.token)
        assert view["id"] == account.id
        assert view["email"] == EMAIL
        assert view["name"] == "Ada"
        assert view["phone"] == "+442079460958"
        assert view["email_verified"] is True
        assert "password_hash" not in view
        assert not any(str(v).startswith("$argon2") for v in view.values())

    async def test_deleted_user(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        async with ctx.uow() as uow:
            await uow.users.delete(account.id)
            await uow.commit()
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=opened.token)

    async def test_expired_token(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        opened = await login_flow.login(ctx, email=EMAIL, password=PASSWORD)
        clock.advance(15 * 60 - 1)
        assert (await profile.read(ctx, token=opened.token))["id"] == account.id
        clock.advance(1)
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=opened.token)

    @pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
    async def test_garbage_token(self, ctx: FlowContext, token: str) -> None:
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=token)

    async def test_token_of_another_service(
        self, ctx: FlowContext, account: Account, clock: FakeClock
    ) -> None:
        foreign = AccessTokens(
            [SigningKey(ctx.secrets.signing_keys[0].kid, Ed25519PrivateKey.generate())],
            issuer="gatehouse",
            audience="gatehouse",
            ttl=timedelta(minutes=15),
            algorithms=["EdDSA"],
        )
        token, _ = foreign.issue(account.id, "s", clock.now)
        with pytest.raises(InvalidToken):
            await profile.read(ctx, token=token)
