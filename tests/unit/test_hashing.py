"""security.hashing: argon2id on a thread pool, parameters in the hash, NFKC, rehash on upgrade."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gatehouse.config import Settings
from gatehouse.security.hashing import Argon2Hasher


def default(name: str) -> int:
    value = Settings.model_fields[name].default
    assert isinstance(value, int)
    return value


@pytest.fixture
async def stronger() -> AsyncIterator[Argon2Hasher]:
    other = Argon2Hasher(memory_kib=2048, time_cost=1, parallelism=1, workers=1)
    yield other
    other.close()


async def test_default_parameters_are_the_asvs_numbers() -> None:
    hasher = Argon2Hasher(
        memory_kib=default("argon2_memory_kib"),
        time_cost=default("argon2_time_cost"),
        parallelism=default("argon2_parallelism"),
        workers=1,
    )
    try:
        encoded = await hasher.hash("correct horse battery")
    finally:
        hasher.close()
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "correct horse battery" not in encoded


async def test_round_trip(hasher: Argon2Hasher) -> None:
    encoded = await hasher.hash("correct horse battery")
    assert encoded.startswith("$argon2id$")
    assert "correct horse battery" not in encoded
    assert await hasher.verify(encoded, "correct horse battery") == (True, False)
    assert await hasher.verify(encoded, "correct horse batterY") == (False, False)
    assert await hasher.verify(encoded, "") == (False, False)


async def test_salted(hasher: Argon2Hasher) -> None:
    first, second = await hasher.hash("same password"), await hasher.hash("same password")
    assert first != second
    assert (await hasher.verify(first, "same password"))[0]
    assert (await hasher.verify(second, "same password"))[0]


async def test_nfkc_equivalent_passwords_match(hasher: Argon2Hasher) -> None:
    encoded = await hasher.hash("\ufb00oobar-Cafe\u0301")  # ligature ff, decomposed é
    assert (await hasher.verify(encoded, "ffoobar-Café"))[0]
    assert not (await hasher.verify(encoded, "ffoobar-Cafe"))[0]


@pytest.mark.parametrize("garbage", ["", "not a hash", "$argon2id$v=19$m=1,t=1,p=1$xx$yy"])
async def test_garbage_hash_is_a_mismatch(hasher: Argon2Hasher, garbage: str) -> None:
    assert await hasher.verify(garbage, "whatever pass") == (False, False)


async def test_needs_rehash_when_parameters_change(
    hasher: Argon2Hasher, stronger: Argon2Hasher
) -> None:
    weak = await hasher.hash("correct horse battery")
    assert await stronger.verify(weak, "correct horse battery") == (True, True)
    strong = await stronger.hash("correct horse battery")
    assert await stronger.verify(strong, "correct horse battery") == (True, False)
    assert strong.startswith("$argon2id$v=19$m=2048,t=1,p=1$")


async def test_burn_verifies_against_a_real_hash(
    hasher: Argon2Hasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    original = hasher._verify_sync

    def spy(password_hash: str, password: str) -> tuple[bool, bool]:
        seen.append((password_hash, password))
        return original(password_hash, password)

    monkeypatch.setattr(hasher, "_verify_sync", spy)
    assert await hasher.burn("any password") is None
    assert len(seen) == 1
    decoy, password = seen[0]
    assert decoy.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert password == "any password"
