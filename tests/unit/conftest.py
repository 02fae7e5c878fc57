"""Fixtures of the unit suite: secrets, a cheap argon2, a controllable clock, test doubles and
embedded implementations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from gatehouse.domain.crypto import Keyring, Secrets, generate_secrets_document, parse_secrets
from gatehouse.domain.tokens import AccessTokens
from gatehouse.security import memory
from gatehouse.security.hashing import Argon2Hasher
from gatehouse.security.memory import MemoryCodeStore
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext, Policy
from tests.fakes import MemoryDatabase, MemoryDeliveryLog, MemoryNotifier

from .api_client import Api, open_api
from .helpers import FakeClock

ISSUER = AUDIENCE = "gatehouse"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the slow import probe of test_architecture in the background if it will run."""
    from . import test_architecture as architecture

    if any(item.name == architecture.PROBE_TEST for item in session.items):
        probe = architecture.start_import_probe()
        session.config.stash[architecture.PROBE] = probe
        session.config.add_cleanup(probe.close)


ACCESS_TTL = timedelta(minutes=15)


@pytest.fixture(scope="session")
def hasher() -> Iterator[Argon2Hasher]:
    """argon2id at 1 MiB / t=1: the real code path, a fraction of the cost."""
    cheap = Argon2Hasher(memory_kib=1024, time_cost=1, parallelism=1, workers=2)
    yield cheap
    cheap.close()


@pytest.fixture
def service_secrets() -> Secrets:
    return parse_secrets(generate_secrets_document())


@pytest.fixture
def keyring(service_secrets: Secrets) -> Keyring:
    return service_secrets.keyring()


@pytest.fixture
def log() -> MemoryDeliveryLog:
    """The courier's delivery log (with the outbox it writes its events to)."""
    return MemoryDeliveryLog()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The flows' clock; the memory code store's monotonic clock follows it too."""
    fake = FakeClock()
    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def db() -> MemoryDatabase:
    return MemoryDatabase()


@pytest.fixture
def codes() -> MemoryCodeStore:
    return MemoryCodeStore()


@pytest.fixture
def tokens(service_secrets: Secrets) -> AccessTokens:
    return AccessTokens(
        service_secrets.signing_keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        ttl=ACCESS_TTL,
        algorithms=["EdDSA"],
    )


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
def ctx(
    db: MemoryDatabase,
    codes: MemoryCodeStore,
    hasher: Argon2Hasher,
    clock: FakeClock,
    service_secrets: Secrets,
    tokens: AccessTokens,
    policy: Policy,
) -> FlowContext:
    return FlowContext(
        notifier=MemoryNotifier(),
        limiter=LimitsRateLimiter({}),  # no limits: the rules have tests of their own
        failures=memory.MemoryFailureCounter(),
        uow=db.uow,
        codes=codes,
        hasher=hasher,
        clock=clock,
        secrets=service_secrets,
        keyring=service_secrets.keyring(),
        tokens=tokens,
        policy=policy,
    )


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    """The HTTP api in-process on SQLite and the embedded bus (tests/unit/api_client.py)."""
    async with open_api(tmp_path, monkeypatch) as opened:
        yield opened
