"""Secrets in BullMQ job data at rest: blanked once a job completes, sealed once it fails.

Job data holds passwords, codes and tokens. A completed job needs them no more: they are
replaced by `[redacted]`. A failed job may be re-driven (`gatehouse jobs retry`), and a re-run
with blanked fields could only be refused; so its secret fields are sealed instead, with
AES-256-GCM under the service's data keyring, bound to the queue, the job id and the field
(a ciphertext cannot be moved to another job). Only a Gatehouse worker can open them, just
before the job runs again; they are never opened anywhere else and never logged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gatehouse.domain.crypto import Keyring
from gatehouse.errors import DecryptionError

SECRET_FIELDS = frozenset(
    {"password", "current_password", "new_password", "otp", "code", "token", "refresh_token"}
)
REDACTED = "[redacted]"
SEALED = "gatehouse-sealed:"


def _walk(data: Any, secret: Callable[[str, Any], Any]) -> Any:
    if isinstance(data, dict):
        return {
            k: secret(k, v) if k in SECRET_FIELDS else _walk(v, secret) for k, v in data.items()
        }
    if isinstance(data, list):
        return [_walk(v, secret) for v in data]
    return data


def redact(data: Any) -> Any:
    """Every secret field blanked (a completed job)."""
    return _walk(data, lambda _k, _v: REDACTED)


def _context(queue: str, job_id: str, field: str) -> str:
    return f"bullmq-job:{queue}:{job_id}:{field}"


def seal(data: Any, keyring: Keyring, queue: str, job_id: str) -> Any:
    """Every secret field encrypted (a failed job); sealed or blanked values stay as they are."""

    def one(field: str, value: Any) -> Any:
        if value == REDACTED or (isinstance(value, str) and value.startswith(SEALED)):
            return value
        return SEALED + keyring.encrypt(json.dumps(value), _context(queue, job_id, field))

    return _walk(data, one)


def _sealed_in(data: Any) -> bool:
    if isinstance(data, dict):
        return any(
            (isinstance(v, str) and v.startswith(SEALED)) if k in SECRET_FIELDS else _sealed_in(v)
            for k, v in data.items()
        )
    if isinstance(data, list):
        return any(_sealed_in(v) for v in data)
    return False


def unseal(data: Any, keyring: Keyring, queue: str, job_id: str) -> Any:
    """The job's data as its producer gave it (a re-driven job). A value that does not open
    (tampered, or sealed for another job) is left sealed: the job is then refused, not run
    with someone else's secret. Data with nothing sealed (every first run) is returned as is."""
    if not _sealed_in(data):
        return data

    def one(field: str, value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith(SEALED)):
            return value
        try:
            return json.loads(keyring.decrypt(value[len(SEALED) :], _context(queue, job_id, field)))
        except (DecryptionError, ValueError):
            return value

    return _walk(data, one)
