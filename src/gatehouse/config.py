"""Settings from GATEHOUSE_* variables and `.env`; empty service URLs mean embedded adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]  # librdkafka's codecs

# Moving-window limits per rule (`limits` syntax; "" switches a rule off). `*_ip` rules count
# per client address, `*_account` per email or phone, `otp_*` per code recipient and per
# destination country. Override all of them at once with GATEHOUSE_RATE_LIMITS='{...}'.
DEFAULT_RATE_LIMITS = {
    "otp_recipient": "1/minute;10/hour",
    "otp_country": "200/hour",
    "register_ip": "20/minute;200/hour",
    "resend_ip": "20/minute",
    "verify_ip": "60/minute",
    "verify_account": "10/minute;50/hour",
    "login_ip": "60/minute;600/hour",
    "login_account": "20/minute",
    "refresh_ip": "120/minute",
    "reauth_ip": "60/minute;600/hour",
    "reauth_account": "10/minute",
    "forgot_ip": "20/minute",
    "reset_ip": "20/minute",
    "reset_account": "10/minute;50/hour",
    "phone_change_account": "3/minute;10/hour",
    "phone_verify_ip": "60/minute",
    "phone_verify_account": "10/minute;50/hour",
    "passkey_login_ip": "60/minute;600/hour",
    "passkey_login_account": "20/minute",
    "passkey_register_account": "10/minute;50/hour",
    "mfa_ip": "60/minute",
    "mfa_account": "10/minute;50/hour",
    "jobs_ip": "600/minute",
}


class Settings(BaseSettings):
    """Every knob of every process; built once by the entrypoint and handed to `bootstrap.build`."""

    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    # HTTP worker processes of `gatehouse api` (0: one per core). Each binds the port with
    # SO_REUSEPORT, so the kernel spreads connections across them. With more than one, Socket.IO
    # clients must use the websocket transport (long-polling needs sticky sessions).
    api_workers: int = Field(default=1, ge=0)
    log_level: str = "INFO"
    log_json: bool = False
    # `gatehouse worker`, `relay` and `courier` answer GET /metrics on this port (0: they do
    # not); the api and `serve` answer it on their own port. Traces: the standard OTEL_*
    # variables (on when OTEL_EXPORTER_OTLP_ENDPOINT is set), not settings of ours.
    metrics_port: int = Field(default=0, ge=0, le=65535)

    database_url: str = "sqlite+aiosqlite:///./gatehouse.db"
    database_pool_size: int = 20
    # The flows on asyncpg directly on PostgreSQL (storage/pg.py); SQLAlchemy when false.
    database_asyncpg: bool = True
    redis_url: str = ""
    kafka_bootstrap_servers: str = ""
    kafka_topic_partitions: int = 3
    kafka_replication_factor: int = 1
    kafka_client_id: str = "gatehouse"
    # Codec of the records Gatehouse produces (relay, dead letters). gzip: every Kafka client
    # reads it with nothing added; kafkajs (the seeds' Node services) reads snappy, lz4 and zstd
    # only with a codec plug-in registered. lz4 or zstd cost less CPU when every consumer can
    # read them; `none` sends records as they are.
    kafka_compression: Compression = "gzip"
    kafka_courier_group: str = "gatehouse-courier"
    kafka_webhooks_group: str = "gatehouse-webhooks"  # `gatehouse webhooks` on user-events
    smtp_url: str = ""
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "Gatehouse <no-reply@gatehouse.local>"

    # Courier channels and retries. Email goes by `smtp` (the default when GATEHOUSE_SMTP_URL is
    # set), `sendgrid` or `console` (development only: it prints codes); empty picks from what is
    # set. SMS and WhatsApp go through Twilio once its account SID and auth token are set, sent
    # from the channel's number or else the Messaging Service. Base URLs are overridable so tests
    # run the real SDKs against a local server. A transient failure is retried up to
    # `courier_attempts` times per channel, `courier_backoff_seconds` apart and doubling.
    email_provider: Literal["", "smtp", "sendgrid", "console"] = ""
    sendgrid_api_key: str = ""
    sendgrid_base_url: str = "https://api.sendgrid.com"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_sms_from: str = ""
    twilio_whatsapp_from: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    courier_http_timeout_seconds: float = 10.0
    courier_attempts: int = Field(default=5, ge=1)
    courier_backoff_seconds: float = Field(default=0.5, ge=0)
    # A courier leases each message it sends for `courier_lease_seconds` (renewed before every
    # try): longer than one provider call, or another courier could take the message over while
    # it is still being sent. A command the database keeps refusing for
    # `courier_retry_budget_seconds` goes to `send-otp.dlq`.
    courier_lease_seconds: float = Field(default=60.0, gt=0)
    courier_retry_budget_seconds: float = Field(default=120.0, ge=0)

    # Secrets: a JSON document (see `gatehouse keys generate`) given inline or as a file. In
    # development a missing file is generated; in production it must exist.
    secrets_json: str = ""
    secrets_file: Path = Path(".gatehouse/secrets.json")

    jwt_issuer: str = "gatehouse"
    jwt_audience: str = "gatehouse"
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["EdDSA"])
    jwt_secret: str = ""
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    refresh_family_max_seconds: int = 90 * 24 * 3600
    # A sensitive change (password, phone, account deletion) needs the session to have proved a
    # factor this recently, or the current password in its body; else 403 reauth_required.
    step_up_seconds: int = Field(default=300, ge=0)
    # How long an api process may answer a profile read from its signed-in cache (with Redis
    # only; every change that ends a session or alters a user empties it on every process at
    # once, before it commits). 0: every read asks the database.
    session_cache_seconds: int = Field(default=30, ge=0)

    code_ttl_seconds: int = 600
    code_max_attempts: int = 5
    pending_registration_ttl_seconds: int = 24 * 3600
    # Register, resend and forgot-password take at least this long, for every email: an existing
    # account's shorter path cannot be told apart by timing. Above their slowest normal path.
    answer_floor_ms: int = 150

    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1)

    rate_limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    # Proxies whose X-Forwarded-For is believed (CIDRs); the client address is otherwise the
    # socket's peer, so nobody can pick their own rate-limit bucket.
    trusted_proxies: list[str] = Field(default_factory=list)

    max_body_bytes: int = 64 * 1024  # no request of this API needs more

    relay_batch_size: int = 500
    relay_poll_interval_seconds: float = 0.05

    # Jobs (BullMQ on Redis, in-process when GATEHOUSE_REDIS_URL is empty) and Socket.IO.
    worker_concurrency: int = 10
    job_attempts: int = 5
    job_backoff_ms: int = 1000
    job_retention_seconds: int = 24 * 3600  # finished jobs (and their results) kept this long
    job_retention_count: int = 10_000  # ... and at most this many per queue
    job_submit_timeout_seconds: float = 5.0
    # A worker killed mid-job (SIGKILL, OOM, lost host) stops renewing its job's lock; once it
    # expires, another worker's stalled-job check (every `job_stalled_interval_ms`) puts the job
    # back to waiting. A job stalled more than `job_max_stalled_count` times is failed instead.
    job_lock_duration_ms: int = Field(default=30_000, ge=1000)
    job_stalled_interval_ms: int = Field(default=30_000, ge=100)
    job_max_stalled_count: int = Field(default=1, ge=0)
    # Bearer key of the admin API (/api/admin: failed jobs, re-drive); empty turns it off (404).
    admin_token: SecretStr = SecretStr("")
    # Audit records older than this many days are removed by `gatehouse audit prune` and by the
    # relay role (a checkpoint keeps the chain verifiable); 0 keeps them all (docs/audit.md).
    audit_retention_days: int = Field(default=0, ge=0)
    # Webhooks (docs/webhooks.md): a failing delivery is retried for `webhook_retry_hours`, the
    # pause from `webhook_backoff_base_ms` doubling (with jitter) up to
    # `webhook_backoff_max_seconds`, then marked failed. Endpoints on private, loopback or
    # link-local addresses are refused unless `webhook_allow_private` (development, tests).
    # A delivery's lease must outlast one post (`webhook_timeout_seconds`).
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_allow_private: bool = False
    webhook_backoff_base_ms: int = Field(default=1000, ge=1)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_lease_seconds: float = Field(default=60.0, gt=0)
    webhook_concurrency: int = Field(default=4, ge=1)  # posts in flight per endpoint and process
    # Browser origins allowed to call the API and to open Socket.IO connections (checked on the
    # handshake's Origin); empty means same-origin only.
    cors_origins: list[str] = Field(default_factory=list)

    # Where browsers reach Gatehouse. Passkeys are bound to a relying party: its id (a domain,
    # empty: the public URL's host) and the origins whose pages may use them (a JSON list,
    # empty: the public URL's origin). A passkey made for one id never works under another, so
    # set the id once, to the registrable domain every sign-in page will live under.
    public_url: str = "http://localhost:8000"
    webauthn_rp_id: str = ""
    webauthn_origins: list[str] = Field(default_factory=list)
    webauthn_rp_name: str = "Gatehouse"
    # The self-service pages (/ui) send a user back after sign-in (`?return_to=`) only to these
    # application origins (a JSON list); any other address goes to the account page.
    ui_return_to: list[str] = Field(default_factory=list)

    def model_post_init(self, _context: Any) -> None:
        # Checked here, not in a validator: a ValidationError would quote the value.
        token = self.admin_token.get_secret_value()
        if token and len(token) < 32:
            raise RuntimeError("GATEHOUSE_ADMIN_TOKEN must be at least 32 characters (or empty)")
        self._relying_party_defaults()
        self._return_to_origins()

    def _return_to_origins(self) -> None:
        """GATEHOUSE_UI_RETURN_TO as origins, written as a browser writes them; anything that is
        not a plain http(s) origin (a path, a query, credentials) stops the process at start."""
        origins = []
        for entry in self.ui_return_to:
            parts = urlsplit(entry)
            plain = not (parts.username or parts.password or parts.query or parts.fragment)
            if parts.scheme not in ("http", "https") or not parts.hostname or not plain:
                raise RuntimeError(f"GATEHOUSE_UI_RETURN_TO: {entry!r} is not an http(s) origin")
            if parts.path not in ("", "/"):
                raise RuntimeError(f"GATEHOUSE_UI_RETURN_TO: {entry!r} has a path: give origins")
            try:
                origins.append(web_origin(entry))
            except ValueError:  # a port that is not a number
                raise RuntimeError(f"GATEHOUSE_UI_RETURN_TO: {entry!r} is not an origin") from None
        self.ui_return_to = origins

    def _relying_party_defaults(self) -> None:
        """Fill the relying party from the public URL, and refuse at start what no browser would
        accept later: an http(s) origin whose host is neither the id nor under it."""
        public = urlsplit(self.public_url)
        if public.scheme not in ("http", "https") or not public.hostname:
            raise RuntimeError("GATEHOUSE_PUBLIC_URL must be an absolute http(s) URL")
        if not self.webauthn_rp_id:
            self.webauthn_rp_id = public.hostname
        self.webauthn_rp_id = self.webauthn_rp_id.lower()
        # Written as a browser writes them (`https://App.example.com/` would never match);
        # other schemes (an Android app's `android:apk-key-hash:...`) are kept as they are.
        web = ("http:", "https:")
        self.webauthn_origins = [
            web_origin(o) if o.lower().startswith(web) else o
            for o in self.webauthn_origins or [self.public_url]
        ]
        rp_id = self.webauthn_rp_id
        for origin in self.webauthn_origins:
            host = urlsplit(origin).hostname if origin.startswith(web) else None  # normalized
            if host is not None and host != rp_id and not host.endswith("." + rp_id):
                raise RuntimeError(
                    f"GATEHOUSE_WEBAUTHN_ORIGINS: {origin} is not on {rp_id} "
                    "(GATEHOUSE_WEBAUTHN_RP_ID), so no browser would use its passkeys there"
                )

    @property
    def embedded_bus(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def migrates_on_start(self) -> bool:
        """A process migrates the database itself on SQLite and in development; in production
        `gatehouse migrate` runs once, before the processes start."""
        return self.is_sqlite or self.env == "development"


def web_origin(url: str) -> str:
    """The origin of an http(s) URL as a browser writes it in `clientDataJSON`: scheme and host
    in lower case, the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    return f"{parts.scheme}://{host}{port}"
