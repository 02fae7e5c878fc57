"""Settings from GATEHOUSE_* variables and `.env`; empty service URLs mean embedded adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of every process; built once by the entrypoint and handed to `bootstrap.build`."""

    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False

    database_url: str = "sqlite+aiosqlite:///./gatehouse.db"
    database_pool_size: int = 10
    redis_url: str = ""
    kafka_bootstrap_servers: str = ""
    kafka_topic_partitions: int = 3
    kafka_replication_factor: int = 1
    kafka_client_id: str = "gatehouse"
    kafka_courier_group: str = "gatehouse-courier"
    smtp_url: str = ""
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "Gatehouse <no-reply@gatehouse.local>"

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

    code_ttl_seconds: int = 600
    code_max_attempts: int = 5
    pending_registration_ttl_seconds: int = 24 * 3600

    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1)

    relay_batch_size: int = 500
    relay_poll_interval_seconds: float = 0.05

    @property
    def embedded_bus(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
