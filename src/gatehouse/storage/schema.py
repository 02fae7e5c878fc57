"""SQL tables (SQLAlchemy Core) shared by the repositories and the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

# One naming convention, so migrations name constraints the same on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (MariaDB and SQLite have no time zones), returned tz-aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


ID = String(36)
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("phone_ciphertext", Text, nullable=True),
    Column("phone_index", String(64), nullable=True, unique=True),
    Column("image", String(2048), nullable=True),
    Column("email_verified_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # A new phone until its code comes back (migration 0005). Its index is not unique: several
    # accounts may be asked for one number, and only `phone_index` says whose it is.
    Column("pending_phone_ciphertext", Text, nullable=True),
    Column("pending_phone_index", String(64), nullable=True),
    Column("pending_phone_expires_at", UTCDateTime, nullable=True),
    # Set by an operator (migration 0007): no sign-in of any kind while it is set.
    Column("disabled_at", UTCDateTime, nullable=True),
)

pending_registrations = Table(
    "pending_registrations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("phone_ciphertext", Text, nullable=True),
    Column("phone_index", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("family_id", ID, nullable=False, index=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("family_expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# One sign-in (id = its refresh-token family, the `sid` of its access tokens). Revoked rows are
# kept, so the tokens of a revoked session stay refused; `amr` is a JSON list (RFC 8176).
sessions = Table(
    "sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=False),
    Column("auth_time", UTCDateTime, nullable=False),
    Column("user_agent", String(256), nullable=True),
    Column("amr", String(200), nullable=False),
    Column("aal", Integer, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    # Its refresh token (migration 0009, `domain.tokens.SessionRefresh`): one row's worth of
    # state however often the session is refreshed.
    Column("refresh_generation", BigInteger, nullable=False, server_default="0"),
    Column("refresh_hash", String(64), nullable=True),
    Column("refresh_expires_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("topic", String(200), nullable=False),
    Column("message_key", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    # The relay scans unpublished rows in order: this index serves exactly that query.
    Index("ix_outbox_published_at_seq", "published_at", "seq"),
)

# The courier's record of each `send-otp` message (id = message id): de-duplicates redelivered
# commands and keeps the outcome. `last_error` is a short provider status, never a body or number.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("status", String(16), nullable=False),  # queued | sending | sent | abandoned
    Column("channel", String(32), nullable=True),  # the channel finally used (or last tried)
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # While `sending`: the courier that holds the message, and until when (then anyone may).
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
)

# Second factors (DESIGN 3b). One authenticator app per account; its secret is encrypted under
# the data keyring; `last_step` is the newest TOTP step accepted, so no code is accepted twice.
totp_factors = Table(
    "totp_factors",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("secret_ciphertext", String(512), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Column("last_step", BigInteger, nullable=False),
)

# Single-use recovery codes, as keyed hashes bound to their account.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

# WebAuthn credentials. A credential id may be 1023 bytes: it is looked up by its SHA-256
# (`credential_key`, unique), which any database can index, and kept whole beside it.
passkeys = Table(
    "passkeys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False, index=True),
    Column("credential_key", String(64), nullable=False, unique=True),
    Column("credential_id", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("transports", String(200), nullable=False),
)

# The audit trail (migration 0007, docs/audit.md): one hash chain per database. Records are
# written with their change, numbered by `id`; the chainer gives them `seq` (their position,
# contiguous: a gap is a removal), `prev_hash` and `hash`, in `id` order, under `audit_head`.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=True, unique=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(16), nullable=False),  # user | admin | system
    Column("action", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("actor_id", String(64), nullable=True),
    Column("user_id", ID, nullable=True),
    Column("factor", String(32), nullable=True),
    Column("detail", String(200), nullable=True),
    Column("client_address", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_log_user_id_id", "user_id", "id"),
    Index("ix_audit_log_action_id", "action", "id"),
)

# The chain's end, one row (id 1): every chaining locks it, so chainers take turns and never
# fork the chain; and a removed newest record still shows against it.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Where retention stopped (one row, id 1): the last record removed; verification starts there.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("removed", BigInteger, nullable=False),
)

# Webhook endpoints and their deliveries (migration 0008, docs/webhooks.md). A delivery is one
# event for one endpoint (unique pair); `seq` orders one user's deliveries to an endpoint, and
# `id` is its `webhook-id`. The body is the CloudEvent as it came from `user-events`.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("events", Text, nullable=False),  # a JSON list of types, `prefix.*` or "*"
    Column("description", String(500), nullable=True),
    Column("paused", Boolean, nullable=False),
    Column("secret_ciphertext", String(512), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("webhook_id", ID, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("user_key", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(200), nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    UniqueConstraint("webhook_id", "event_id"),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_chain", "webhook_id", "user_key", "seq"),
    Index("ix_webhook_deliveries_webhook_id_seq", "webhook_id", "seq"),
)
