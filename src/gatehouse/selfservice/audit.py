"""The audit trail: one structured log line per authentication operation, success or failure,
with its factor and outcome. Never a password, code, token, key or phone number: only ids."""

from __future__ import annotations

import logging

log = logging.getLogger("gatehouse.audit")


def audit(
    action: str,
    outcome: str,
    *,
    factor: str | None = None,
    user_id: str | None = None,
    reason: str | None = None,
) -> None:
    fields = {
        "action": action,
        "outcome": outcome,
        "factor": factor,
        "user_id": user_id,
        "reason": reason,
    }
    record = {k: v for k, v in fields.items() if v is not None}
    log.info("%s %s%s", action, outcome, f" ({reason})" if reason else "", extra={"audit": record})
