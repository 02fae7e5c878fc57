"""The composition root: the only place that chooses implementations. `build(settings)` makes every
object a process needs, once; entrypoints take what they run from the returned `Services`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.config import Settings
from gatehouse.courier.channels.console import ConsoleChannel
from gatehouse.courier.channels.twilio_sms import TwilioSmsChannel
from gatehouse.courier.channels.twilio_whatsapp import TwilioWhatsAppChannel
from gatehouse.courier.templates import Templates
from gatehouse.domain import events
from gatehouse.domain.crypto import Keyring
from gatehouse.domain.tokens import AccessTokens
from gatehouse.jobs.bullmq_queues import BullmqJobs
from gatehouse.jobs.bullmq_workers import BullmqWorkers
from gatehouse.jobs.embedded import MemoryJobs
from gatehouse.observability.prometheus import prometheus_metrics
from gatehouse.observability.tracing import build_tracer
from gatehouse.outbox.bus import MemoryBus
from gatehouse.outbox.kafka import KafkaPublisher, KafkaSource, ensure_topics
from gatehouse.ports import (
    Channel,
    CodeStore,
    DatabaseSchema,
    DeliveryLog,
    DeliverySource,
    EventPublisher,
    FailureCounter,
    Jobs,
    JobWorker,
    Notifier,
    OutboxStore,
    UnitOfWork,
)
from gatehouse.ports.audit import AuditStore, UserDirectory
from gatehouse.ports.telemetry import MetricsEndpoint, Tracer
from gatehouse.realtime.invalidations import RedisInvalidations
from gatehouse.realtime.notifier import SocketIONotifier, socket_server
from gatehouse.security.hashing import Argon2Hasher
from gatehouse.security.memory import MemoryCodeStore, MemoryFailureCounter
from gatehouse.security.password_list import load_common_passwords
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.security.redis_client import redis_client
from gatehouse.security.redis_codes import RedisCodeStore
from gatehouse.security.redis_failures import RedisFailureCounter
from gatehouse.security.secrets_file import load_secrets as load_secrets  # processes.py's
from gatehouse.selfservice import audit
from gatehouse.selfservice.context import FlowContext, Policy, RelyingParty
from gatehouse.selfservice.sessions.cache import SignedInCache
from gatehouse.selfservice.sessions.invalidating import invalidating_units
from gatehouse.storage import sql
from gatehouse.storage.migrate import SqlSchema
from gatehouse.storage.pg import PgDatabase
from gatehouse.storage.pg_refresh import PgRotations
from gatehouse.storage.pg_signin import PgSessionOpenings
from gatehouse.storage.pg_signup import PgSignUpFinishes
from gatehouse.storage.sql_audit import SqlAuditStore, SqlUserDirectory
from gatehouse.storage.sql_deliveries import SqlDeliveryLog
from gatehouse.storage.sql_outbox import SqlOutboxStore
from gatehouse.storage.sql_webhooks import SqlWebhookStore
from gatehouse.webhooks.httpx_client import HttpxWebhookClient

log = logging.getLogger(__name__)
TOPICS = (events.SEND_OTP, events.USER_EVENTS, events.SEND_OTP_DLQ)


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
    jobs: Jobs  # submit and read jobs (BullMQ, or the in-process queue embedded)
    job_worker: JobWorker  # consume them
    sockets: Any  # the socketio.AsyncServer api processes mount at /socket.io
    schema: DatabaseSchema  # migrations and the schema check, on the service's engine
    bus: MemoryBus | None = None
    redis: Redis | None = None
    checks: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    metrics: MetricsEndpoint = field(default_factory=prometheus_metrics)
    tracer: Tracer | None = None  # None: tracing is off (no OTEL_EXPORTER_OTLP_ENDPOINT)
    # The signed-in cache's channel, which api processes listen to (None without Redis).
    invalidations: RedisInvalidations | None = None

    def delivery_source(self, topic: str = events.SEND_OTP) -> DeliverySource:
        """A fresh consumer of `send-otp` for one courier (`user-events`: for the webhooks)."""
        if self.bus is not None:
            return self.bus.source(topic)
        s, part = self.settings, "webhooks" if topic == events.USER_EVENTS else "courier"
        group = s.kafka_webhooks_group if part == "webhooks" else s.kafka_courier_group
        return KafkaSource(s.kafka_bootstrap_servers, group, topic, f"{s.kafka_client_id}-{part}")

    def delivery_log(self) -> DeliveryLog:
        """The courier's record of each message, in the service database."""
        return SqlDeliveryLog(self.engine)

    def audit_store(self) -> AuditStore:  # the audit chain, for operators (docs/audit.md)
        return SqlAuditStore(self.engine)

    def user_directory(self) -> UserDirectory:  # the admin search of accounts
        return SqlUserDirectory(self.engine)

    def webhooks(self) -> tuple[SqlWebhookStore, HttpxWebhookClient]:  # docs/webhooks.md
        s = self.settings  # the client opens nothing before its first post
        client = HttpxWebhookClient(s.webhook_timeout_seconds, s.webhook_allow_private)
        return SqlWebhookStore(self.engine), client

    def dead_letters(self) -> EventPublisher:
        """Where one courier sets aside what it cannot process (`send-otp.dlq`): a producer of
        its own (the relay closes the shared one when it stops), or the in-process bus."""
        if self.bus is not None:
            return self.bus
        s = self.settings
        return KafkaPublisher(
            s.kafka_bootstrap_servers,
            f"{s.kafka_client_id}-courier",
            compression=s.kafka_compression,
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


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The courier's channels by name (`email`, `sms`, `whatsapp`), from configuration. The
    email libraries are imported only when configured (SendGrid's SDK alone is 8 MB per
    process); the Twilio channels import their SDK themselves, when first used."""
    from gatehouse.courier.channels.smtp import SmtpChannel

    s = settings
    channels: dict[str, Channel] = {}
    provider = s.email_provider or ("smtp" if s.smtp_url else "")
    if provider == "smtp":
        if not s.smtp_url:
            raise RuntimeError("GATEHOUSE_EMAIL_PROVIDER=smtp needs GATEHOUSE_SMTP_URL")
        channels["email"] = SmtpChannel(s.smtp_url, s.mail_from, s.smtp_timeout_seconds)
    elif provider == "sendgrid":
        from gatehouse.courier.channels.sendgrid import SendGridChannel

        if not s.sendgrid_api_key:
            raise RuntimeError("GATEHOUSE_EMAIL_PROVIDER=sendgrid needs GATEHOUSE_SENDGRID_API_KEY")
        channels["email"] = SendGridChannel(
            s.sendgrid_api_key,
            s.mail_from,
            base_url=s.sendgrid_base_url,
            timeout=s.courier_http_timeout_seconds,
        )
    # The console prints codes and phone numbers: a development tool, refused in production.
    elif provider == "console" or s.env == "development":
        if s.env == "production":
            raise RuntimeError("GATEHOUSE_EMAIL_PROVIDER=console is for development only")
        channels["email"] = ConsoleChannel("console")
    twilio = bool(s.twilio_account_sid and s.twilio_auth_token)
    for name, kind, sender in (
        ("sms", TwilioSmsChannel, s.twilio_sms_from),
        ("whatsapp", TwilioWhatsAppChannel, s.twilio_whatsapp_from),
    ):
        if twilio and (sender or s.twilio_messaging_service_sid):
            channels[name] = kind(
                s.twilio_account_sid,
                s.twilio_auth_token,
                from_number=sender,
                messaging_service_sid=s.twilio_messaging_service_sid,
                base_url=s.twilio_base_url,
                timeout=s.courier_http_timeout_seconds,
            )
        elif not twilio and s.env == "development":
            channels[name] = ConsoleChannel(name)  # `gatehouse serve` shows SMS codes too
    return channels


def build_jobs(settings: Settings, keyring: Keyring | None = None) -> tuple[Jobs, JobWorker]:
    """BullMQ queues with Redis; embedded, one in-process queue is both producer and consumer.
    `keyring` seals the secrets of failed BullMQ jobs, so that they can be re-driven."""
    s = settings
    if s.redis_url:
        jobs = BullmqJobs(
            s.redis_url,
            attempts=s.job_attempts,
            backoff_ms=s.job_backoff_ms,
            retention_seconds=s.job_retention_seconds,
            retention_count=s.job_retention_count,
            timeout=s.job_submit_timeout_seconds,
        )
        workers = BullmqWorkers(
            s.redis_url,
            lock_duration_ms=s.job_lock_duration_ms,
            stalled_interval_ms=s.job_stalled_interval_ms,
            max_stalled_count=s.job_max_stalled_count,
            keyring=keyring,
            retention_seconds=s.job_retention_seconds,
            retention_count=s.job_retention_count,
        )
        return jobs, workers
    memory = MemoryJobs(
        attempts=s.job_attempts, backoff_ms=s.job_backoff_ms, capacity=s.job_retention_count
    )
    return memory, memory


def units_of_work(
    settings: Settings, engine: AsyncEngine
) -> tuple[Callable[[], UnitOfWork], Callable[[], UnitOfWork], PgDatabase | None]:
    """The flows' storage: on PostgreSQL the asyncpg adapter (`storage/pg.py`, three times
    cheaper a request than SQLAlchemy's), unless turned off; SQLAlchemy on every other
    database, and always for the relay, the courier, migrations and health."""
    if settings.database_asyncpg and settings.is_postgres:
        database = PgDatabase(settings.database_url, settings.database_pool_size)
        return database.uow, database.reader, database
    reading = sql.autocommit(engine)
    return (
        lambda: sql.SqlUnitOfWork(engine),
        lambda: sql.SqlUnitOfWork(reading, read_only=True),
        None,
    )


def build_schema(settings: Settings) -> DatabaseSchema:
    """Migrations and the schema check alone, on an engine of their own (closed with it): what
    `gatehouse migrate` and `gatehouse db check` need, without secrets or any other service."""
    return SqlSchema(sql.create_engine(settings.database_url), owns_engine=True)


def build(
    settings: Settings, *, clock: Callable[[], datetime] = utcnow, role: str = "gatehouse"
) -> Services:
    """Everything a process of `role` (api, worker, relay, courier, serve) runs."""
    secrets = load_secrets(settings)
    metrics = prometheus_metrics()
    audit.count_with(metrics)
    tracer = build_tracer(role)
    engine = sql.create_engine(settings.database_url, settings.database_pool_size)
    redis: Redis | None = None
    codes: CodeStore
    if settings.redis_url:
        redis = redis_client(settings.redis_url)
        codes = redis_codes = RedisCodeStore.connected(redis, settings.redis_url)
    else:
        codes = MemoryCodeStore()
    hasher = Argon2Hasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
        observe=metrics.password_hash,
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
        step_up=timedelta(seconds=settings.step_up_seconds),
        answer_floor=timedelta(milliseconds=settings.answer_floor_ms),
    )
    # Built before the flows' context, which holds the notifier: with Redis every process
    # publishes to every api node's Socket.IO server; embedded, the in-process server emits.
    sockets = socket_server(settings.redis_url, settings.cors_origins)
    notifier = SocketIONotifier(sockets, settings.redis_url)
    pushes: Notifier = notifier
    # Limits and failure counts live in Redis when there is one, so every process shares them.
    limiter = LimitsRateLimiter(
        settings.rate_limits, settings.redis_url, pool=redis.connection_pool if redis else None
    )
    failures: FailureCounter = RedisFailureCounter(redis) if redis else MemoryFailureCounter()
    units, readers, pg_database = units_of_work(settings, engine)
    invalidations: RedisInvalidations | None = None
    if redis is not None:  # every process announces; api processes listen (and cache)
        cache = SignedInCache(ttl_seconds=settings.session_cache_seconds)
        invalidations = RedisInvalidations(redis, cache)
        units = invalidating_units(units, invalidations)
    if tracer is not None:  # outbox rows, pushes and jobs carry the trace context
        from gatehouse.observability.traced import TracedNotifier, traced_units

        units, pushes = traced_units(units, tracer), TracedNotifier(notifier, tracer)
    ctx = FlowContext(
        uow=units,
        read_uow=readers,
        codes=codes,
        hasher=hasher,
        clock=clock,
        secrets=secrets,
        keyring=secrets.keyring(),
        tokens=tokens,
        policy=policy,
        notifier=pushes,
        limiter=limiter,
        failures=failures,
        common_passwords=load_common_passwords(),
        signed_in=invalidations.cache if invalidations and settings.session_cache_seconds else None,
        rotations=PgRotations(pg_database) if pg_database is not None else None,
        sign_ups=PgSignUpFinishes(pg_database) if pg_database is not None else None,
        sign_ins=PgSessionOpenings(pg_database) if pg_database is not None else None,
        relying_party=RelyingParty(
            id=settings.webauthn_rp_id,
            name=settings.webauthn_rp_name,
            origins=tuple(settings.webauthn_origins),
        ),
    )
    bus: MemoryBus | None = None
    publisher: EventPublisher
    if settings.kafka_bootstrap_servers:
        publisher = KafkaPublisher(
            settings.kafka_bootstrap_servers,
            settings.kafka_client_id,
            compression=settings.kafka_compression,
        )
    else:
        bus = MemoryBus(TOPICS)
        publisher = bus
    channels = build_channels(settings)
    jobs, job_worker = build_jobs(settings, ctx.keyring)
    submitted = jobs
    if tracer is not None:
        from gatehouse.observability.traced import TracedChannel, TracedJobs

        channels = {name: TracedChannel(c, tracer) for name, c in channels.items()}
        submitted = TracedJobs(jobs, tracer)
    # The relay's peek (`SqlOutboxStore`): one connection of its own, opened by its first poll.
    relay_pool = PgDatabase(settings.database_url, 1) if pg_database is not None else None
    services = Services(
        settings=settings,
        engine=engine,
        ctx=ctx,
        outbox_store=SqlOutboxStore(engine, clock, relay_pool),
        publisher=publisher,
        templates=Templates(),
        channels=channels,
        jobs=submitted,
        job_worker=job_worker,
        sockets=sockets,
        schema=SqlSchema(engine),
        bus=bus,
        redis=redis,
        metrics=metrics,
        tracer=tracer,
        invalidations=invalidations,
    )
    if tracer is not None:  # closed last (closers run in reverse): flushes the spans
        shutdown = tracer.shutdown
        services._closers.insert(0, lambda: asyncio.to_thread(shutdown))
    services.checks["database"] = lambda: sql.ping(engine)
    if redis is not None:
        services.checks["redis"] = codes.ping
        services._closers += [redis.aclose, redis_codes.aclose]
    if settings.kafka_bootstrap_servers:
        services.checks["kafka"] = publisher.ping
    services._closers.append(engine.dispose)
    for pool in (pg_database, relay_pool):
        if pool is not None:
            services._closers.append(pool.close)

    async def _close_hasher() -> None:
        hasher.close()

    services._closers.append(_close_hasher)
    services._closers.append(notifier.close)
    if isinstance(jobs, BullmqJobs):
        services._closers.append(jobs.close)
    return services
