"""The composition root: the only place that chooses adapters. `build(settings)` makes every
object a process needs, once; entrypoints take what they run from the returned `Services`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.adapters import sql
from gatehouse.adapters.courier.console import ConsoleChannel
from gatehouse.adapters.courier.smtp import SmtpChannel
from gatehouse.adapters.courier.templates import Templates
from gatehouse.adapters.hashing import Argon2Hasher
from gatehouse.adapters.kafka_events import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.adapters.memory import MemoryBus, MemoryCodeStore, MemoryNotifier
from gatehouse.adapters.redis_codes import RedisCodeStore
from gatehouse.config import Settings
from gatehouse.domain import events
from gatehouse.domain.crypto import Secrets, generate_secrets_document, parse_secrets
from gatehouse.domain.tokens import AccessTokens
from gatehouse.flows.context import FlowContext, Policy
from gatehouse.ports import Channel, CodeStore, DeliverySource, EventPublisher, OutboxStore

log = logging.getLogger(__name__)
TOPICS = (events.SEND_OTP, events.USER_EVENTS)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    ctx: FlowContext
    outbox_store: OutboxStore
    publisher: EventPublisher
    templates: Templates
    channels: dict[str, Channel]
    bus: MemoryBus | None = None
    redis: Redis | None = None
    checks: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def delivery_source(self) -> DeliverySource:
        """A fresh consumer of `send-otp` for one courier."""
        if self.bus is not None:
            return self.bus.source(events.SEND_OTP)
        s = self.settings
        return KafkaSource(
            s.kafka_bootstrap_servers,
            s.kafka_courier_group,
            events.SEND_OTP,
            f"{s.kafka_client_id}-courier",
        )

    def ensure_topics(self) -> list[str]:
        s = self.settings
        if not s.kafka_bootstrap_servers:
            return []
        return ensure_topics(
            s.kafka_bootstrap_servers, TOPICS, s.kafka_topic_partitions, s.kafka_replication_factor
        )

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # closing one must not keep the others open
                log.exception("error while closing")


def load_secrets(settings: Settings) -> Secrets:
    """Inline JSON, else the secrets file; generated into the file only in development."""
    if settings.secrets_json:
        return parse_secrets(json.loads(settings.secrets_json))
    path = Path(settings.secrets_file)
    if not path.exists():
        if settings.env == "production":
            raise RuntimeError(
                f"no secrets: set GATEHOUSE_SECRETS_JSON or create {path} "
                "with `gatehouse keys generate` (never generated in production)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(generate_secrets_document(), handle, indent=2)
        log.warning("generated development secrets in %s", path)
    return parse_secrets(json.loads(path.read_text()))


def build(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Services:
    secrets = load_secrets(settings)
    engine = sql.create_engine(settings.database_url, settings.database_pool_size)
    redis: Redis | None = None
    codes: CodeStore
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, health_check_interval=30)
        codes = RedisCodeStore(redis)
    else:
        codes = MemoryCodeStore()
    hasher = Argon2Hasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
    )
    tokens = AccessTokens(
        secrets.signing_keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        algorithms=settings.jwt_algorithms,
        hs256_secret=settings.jwt_secret.encode() if settings.jwt_secret else None,
    )
    policy = Policy(
        code_ttl=timedelta(seconds=settings.code_ttl_seconds),
        code_attempts=settings.code_max_attempts,
        pending_ttl=timedelta(seconds=settings.pending_registration_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        refresh_family_max=timedelta(seconds=settings.refresh_family_max_seconds),
    )
    # Replaced by the Socket.IO notifier once the api or worker wires one (issue 3).
    notifier = MemoryNotifier()
    ctx = FlowContext(
        uow=lambda: sql.SqlUnitOfWork(engine),
        codes=codes,
        hasher=hasher,
        clock=clock,
        secrets=secrets,
        keyring=secrets.keyring(),
        tokens=tokens,
        policy=policy,
        notifier=notifier,
    )
    bus: MemoryBus | None = None
    publisher: EventPublisher
    if settings.kafka_bootstrap_servers:
        publisher = KafkaPublisher(settings.kafka_bootstrap_servers, settings.kafka_client_id)
    else:
        bus = MemoryBus()
        publisher = bus
    channels: dict[str, Channel] = {}
    if settings.smtp_url:
        channels["email"] = SmtpChannel(
            settings.smtp_url, settings.mail_from, settings.smtp_timeout_seconds
        )
    elif settings.env == "development":
        channels["email"] = ConsoleChannel("console")
    services = Services(
        settings=settings,
        engine=engine,
        ctx=ctx,
        outbox_store=sql.SqlOutboxStore(engine, clock),
        publisher=publisher,
        templates=Templates(),
        channels=channels,
        bus=bus,
        redis=redis,
    )
    services.checks["database"] = lambda: sql.ping(engine)
    if redis is not None:
        services.checks["redis"] = codes.ping
        services._closers.append(redis.aclose)
    if settings.kafka_bootstrap_servers:
        services.checks["kafka"] = publisher.ping
    services._closers.append(engine.dispose)

    async def _close_hasher() -> None:
        hasher.close()

    services._closers.append(_close_hasher)
    return services
