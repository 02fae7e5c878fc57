"""The `Factors` repository's contract (passkeys, authenticator apps, recovery codes) on SQLite,
PostgreSQL (SQLAlchemy and asyncpg), MariaDB and, where the fake agrees, the unit suite's
`MemoryFactors`: rows round-trip with aware times, and every spend is once: a passkey's counter
only goes forward, a TOTP step is accepted once, a recovery code is used once. Then passkey
flows across two api nodes sharing Redis: started on one, finished on the other, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from gatehouse.domain.crypto import generate_secrets_document, parse_secrets
from gatehouse.domain.factors import Passkey, TotpFactor
from gatehouse.errors import Conflict, InvalidCredentials
from gatehouse.security.memory import MemoryFailureCounter
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.security.redis_codes import RedisCodeStore
from gatehouse.selfservice.context import FlowContext, Policy
from gatehouse.selfservice.passkeys import flow as passkeys
from tests.conftest import unique
from tests.fakes import MemoryNotifier
from tests.integration.conftest import BACKENDS, FAKE, Units
from tests.integration.test_sql_contract import NOW, a_user
from tests.softauthn import SoftAuthenticator, b64url

on_the_fake_too = pytest.mark.parametrize(
    "backend_database", [*BACKENDS, FAKE], indirect=True, scope="session"
)
LONG_ID = "A" * 1364  # a 1023-byte credential id, the most WebAuthn allows


def a_passkey(n: int, user_id: str, **changes: object) -> Passkey:
    fields: dict[str, object] = {
        "id": f"pk-{n}",
        "user_id": user_id,
        "credential_id": f"cred-{n}",
        "public_key": f"pQECAyYgASFY-{n}",
        "sign_count": 0,
        "name": f"Key {n} é",
        "created_at": NOW + timedelta(seconds=n),
        "transports": "internal,hybrid",
    }
    return Passkey(**{**fields, **changes})  # type: ignore[arg-type]


# --- passkeys ----------------------------------------------------------------------------------


@on_the_fake_too
async def test_passkeys_round_trip_per_account_oldest_first(units: Units) -> None:
    ada, bob = a_user(1).id, a_user(2).id
    second, first = a_passkey(2, ada), a_passkey(1, ada, credential_id=LONG_ID, transports="")
    bobs = a_passkey(3, bob, last_used_at=NOW)
    async with units() as uow:
        for passkey in (second, first, bobs):
            await uow.factors.add_passkey(passkey)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.passkeys(ada) == [first, second]
        assert await uow.factors.passkeys(bob) == [bobs]
        assert await uow.factors.passkeys("nobody") == []
        found = await uow.factors.passkey_by_credential(LONG_ID)
        assert found == first and found.created_at.tzinfo is not None
        assert await uow.factors.passkey_by_credential("cred-3") == bobs
        assert await uow.factors.passkey_by_credential("cred-9") is None


@pytest.mark.parametrize("backend_database", BACKENDS, indirect=True, scope="session")
async def test_a_registered_credential_is_a_conflict_whoever_adds_it(units: Units) -> None:
    async with units() as uow:
        await uow.factors.add_passkey(a_passkey(1, a_user(1).id))
        await uow.commit()
    with pytest.raises(Conflict):
        async with units() as uow:
            await uow.factors.add_passkey(a_passkey(2, a_user(2).id, credential_id="cred-1"))
            await uow.commit()
    async with units() as uow:
        assert await uow.factors.passkeys(a_user(2).id) == []


@on_the_fake_too
async def test_a_passkeys_counter_only_goes_forward(units: Units) -> None:
    ada = a_user(1).id
    counted, counterless = a_passkey(1, ada, sign_count=5), a_passkey(2, ada)
    later = NOW + timedelta(minutes=1)
    async with units() as uow:
        await uow.factors.add_passkey(counted)
        await uow.factors.add_passkey(counterless)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.use_passkey("pk-1", 5, later) is False  # the same: a replay
        assert await uow.factors.use_passkey("pk-1", 4, later) is False
        assert await uow.factors.use_passkey("pk-1", 0, later) is False
        assert await uow.factors.use_passkey("pk-1", 6, later) is True
        assert await uow.factors.use_passkey("pk-1", 6, later) is False
        assert await uow.factors.use_passkey("pk-2", 0, later) is True  # keeps no counter
        assert await uow.factors.use_passkey("pk-2", 0, later) is True
        assert await uow.factors.use_passkey("no-such-passkey", 9, later) is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.passkeys(ada) == [
            replace(counted, sign_count=6, last_used_at=later),
            replace(counterless, last_used_at=later),
        ]


@on_the_fake_too
async def test_a_passkey_is_removed_by_its_owner_once(units: Units) -> None:
    ada, bob = a_user(1).id, a_user(2).id
    async with units() as uow:
        await uow.factors.add_passkey(a_passkey(1, ada))
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.remove_passkey(bob, "pk-1") is False
        assert await uow.factors.remove_passkey(ada, "pk-1") is True
        assert await uow.factors.remove_passkey(ada, "pk-1") is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.passkey_by_credential("cred-1") is None


@on_the_fake_too
async def test_a_passkey_is_renamed_by_its_owner_only(units: Units) -> None:
    ada, bob = a_user(1).id, a_user(2).id
    async with units() as uow:
        await uow.factors.add_passkey(a_passkey(1, ada))
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.rename_passkey(bob, "pk-1", "Mallory's") is False
        assert await uow.factors.rename_passkey(ada, "pk-1", "Portátil") is True
        assert await uow.factors.rename_passkey(ada, "pk-1", "Portátil") is True  # unchanged
        assert await uow.factors.rename_passkey(ada, "pk-9", "Nothing") is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.passkeys(ada) == [replace(a_passkey(1, ada), name="Portátil")]


# --- authenticator apps and recovery codes -----------------------------------------------------


@on_the_fake_too
async def test_totp_set_up_confirmed_once_and_each_step_accepted_once(units: Units) -> None:
    ada = a_user(1).id
    pending = TotpFactor(user_id=ada, secret_ciphertext="v1.k.first", created_at=NOW)
    again = replace(pending, secret_ciphertext="v1.k.second")
    async with units() as uow:
        await uow.factors.put_totp(pending)
        await uow.factors.put_totp(again)  # a new set-up replaces the unconfirmed one
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.totp(ada) == again
        assert await uow.factors.totp(a_user(2).id) is None
        assert await uow.factors.use_totp_step(ada, 100) is False  # not confirmed yet
        assert await uow.factors.confirm_totp(ada, NOW, 100) is True
        assert await uow.factors.confirm_totp(ada, NOW, 101) is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.totp(ada) == replace(again, confirmed_at=NOW, last_step=100)
        assert await uow.factors.use_totp_step(ada, 100) is False  # the confirming code's step
        assert await uow.factors.use_totp_step(ada, 99) is False
        assert await uow.factors.use_totp_step(ada, 101) is True
        assert await uow.factors.use_totp_step(ada, 101) is False
        await uow.factors.rewrap_totp(ada, "v2.k.second")
        await uow.commit()
    async with units() as uow:
        stored = await uow.factors.totp(ada)
        assert stored is not None and (stored.last_step, stored.secret_ciphertext) == (
            101,
            "v2.k.second",
        )
        assert await uow.factors.remove_totp(ada) is True
        assert await uow.factors.remove_totp(ada) is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.totp(ada) is None


@on_the_fake_too
async def test_totp_pages_walk_every_app_in_user_order(units: Units) -> None:
    ids = [a_user(n).id for n in (3, 1, 2)]
    async with units() as uow:
        for user_id in ids:
            await uow.factors.put_totp(TotpFactor(user_id, f"v1.k.{user_id}", NOW))
        await uow.commit()
    async with units() as uow:
        first = await uow.factors.totp_page("", 2)
        rest = await uow.factors.totp_page(first[-1].user_id, 2)
    assert [f.user_id for f in first + rest] == sorted(ids)


@on_the_fake_too
async def test_recovery_codes_are_used_once_by_their_account(units: Units) -> None:
    ada, bob = a_user(1).id, a_user(2).id
    hashes = [f"{n:064x}" for n in range(10)]
    async with units() as uow:
        await uow.factors.replace_recovery_codes(ada, hashes, NOW)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.recovery_codes_left(ada) == 10
        assert await uow.factors.use_recovery_code(bob, hashes[0], NOW) is False
        assert await uow.factors.use_recovery_code(ada, hashes[0], NOW) is True
        assert await uow.factors.use_recovery_code(ada, hashes[0], NOW) is False
        assert await uow.factors.use_recovery_code(ada, "f" * 64, NOW) is False
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.recovery_codes_left(ada) == 9
        fresh = [f"{n:064x}" for n in range(100, 110)]
        await uow.factors.replace_recovery_codes(ada, fresh, NOW)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.recovery_codes_left(ada) == 10
        assert await uow.factors.use_recovery_code(ada, hashes[1], NOW) is False  # replaced
        assert await uow.factors.use_recovery_code(ada, fresh[0], NOW) is True
        await uow.commit()


@on_the_fake_too
async def test_methods_and_remove_all(units: Units) -> None:
    ada, bob = a_user(1).id, a_user(2).id
    async with units() as uow:
        assert await uow.factors.methods(ada) == ()
        await uow.factors.put_totp(TotpFactor(ada, "v1.k.s", NOW))  # unconfirmed: no method
        await uow.factors.replace_recovery_codes(ada, ["a" * 64], NOW)
        await uow.factors.add_passkey(a_passkey(1, bob))
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.methods(ada) == ("recovery_code",)
        assert await uow.factors.methods(bob) == ("passkey",)
        await uow.factors.confirm_totp(ada, NOW, 1)
        await uow.factors.add_passkey(a_passkey(2, ada))
        await uow.factors.use_recovery_code(ada, "a" * 64, NOW)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.methods(ada) == ("totp", "passkey")
        await uow.factors.remove_all(ada)
        await uow.commit()
    async with units() as uow:
        assert await uow.factors.methods(ada) == ()
        assert await uow.factors.totp(ada) is None
        assert await uow.factors.passkeys(ada) == []
        assert await uow.factors.methods(bob) == ("passkey",)  # another account's stay


# --- two api nodes, one Redis ------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def node(units: Units, redis: Redis, prefix: str, document: dict[str, object]) -> FlowContext:
    """One api process's context: its own Redis client objects, the deployment's secrets."""
    secrets = parse_secrets(document)
    return FlowContext(
        uow=units,
        codes=RedisCodeStore(redis, prefix=prefix),
        hasher=None,  # type: ignore[arg-type]  # no password in a passkey sign-in
        clock=lambda: NOW,
        secrets=secrets,
        keyring=secrets.keyring(),
        tokens=None,  # type: ignore[arg-type]
        policy=Policy(),
        notifier=MemoryNotifier(),
        limiter=LimitsRateLimiter({}),
        failures=MemoryFailureCounter(),
    )


@pytest.mark.parametrize(
    "backend_database", ["postgres-asyncpg", "mariadb"], indirect=True, scope="session"
)
async def test_a_flow_started_on_one_node_finishes_on_another_once(
    units: Units, redis: Redis
) -> None:
    document = generate_secrets_document()
    prefix = unique("test:code") + ":"
    one, two = node(units, redis, prefix, document), node(units, redis, prefix, document)
    user = a_user(1)
    device = SoftAuthenticator()
    made = device.create(
        {"rp": {"id": "localhost"}, "user": {"id": b64url(user.id.encode())}, "challenge": "AA"}
    )
    credential = device.credentials[next(iter(device.credentials))]
    async with units() as uow:
        await uow.users.add(user)
        cose = b64url(credential.cose_key())
        await uow.factors.add_passkey(
            a_passkey(1, user.id, credential_id=made["id"], public_key=cose)
        )
        await uow.commit()
    started = await passkeys.assertion_options(one, user_id=user.id)
    answer = device.get(started["options"])
    found, used = await passkeys.verify_assertion(
        two, flow_id=started["flow_id"], credential=answer, user_id=user.id
    )
    assert (found.id, used.sign_count) == (user.id, 1)
    with pytest.raises(InvalidCredentials):  # spent, for every node
        await passkeys.verify_assertion(
            one, flow_id=started["flow_id"], credential=answer, user_id=user.id
        )
    passwordless = await passkeys.assertion_options(two, user_id=None)
    opened = await passkeys.assertion_options(one, user_id=None)
    assert passwordless["options"]["challenge"] != opened["options"]["challenge"]
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 2  # the two live flows: the spent one is gone
    assert all(0 < ttl <= 300 for ttl in [await redis.ttl(k) for k in keys])
