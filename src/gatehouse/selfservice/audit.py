"""The audit trail (docs/audit.md). `audit` writes one structured log line; `record` writes that
line and stages the record in the caller's unit of work, chained and written as it commits, in
its transaction; `refused` stages a refusal, which is written even if the unit rolls back;
`record_alone` writes one in a transaction of its own, for a refusal with no unit open.

What is recorded: every credential checked for an account (sign-in, second step, refresh,
reauth, step-up), success or failure, and every change to an account, by its user, an operator
or the system. Refusals that name no account (a malformed or unknown token, a throttled or
rate-limited attempt) are log lines only, but for the password sign-in: an unknown account, a
disabled one and a wrong password are all recorded, so the three take the same time.

The client address comes from `client_address`, a context variable the HTTP door sets for each
request (web/middleware.py); jobs and commands have none. Never a password, code, token, key or
phone number: only ids, and `detail` is scrubbed (domain/audit.py)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

from gatehouse.domain.audit import USER, AuditEntry, entry
from gatehouse.ports import UnitOfWork
from gatehouse.ports.telemetry import NO_METRICS, Metrics
from gatehouse.selfservice.context import FlowContext

log = logging.getLogger("gatehouse.audit")
client_address: ContextVar[str | None] = ContextVar("gatehouse_client_address", default=None)
# Sign-in steps (`login`, `login.mfa`: the second factor) are counted by outcome and factor
# through the process's `Metrics` (bootstrap calls `count_with`), whatever the log level.
SIGN_INS = frozenset({"login", "login.mfa"})
_counted: list[Metrics] = [NO_METRICS]


def count_with(metrics: Metrics) -> None:
    """Where sign-ins are counted from now on (the process's metrics are one set)."""
    _counted[0] = metrics


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
    if action in SIGN_INS:
        _counted[0].login(outcome, factor or "unknown")
    record = {k: v for k, v in fields.items() if v is not None}
    log.info("%s %s%s", action, outcome, f" ({reason})" if reason else "", extra={"audit": record})


def record(
    ctx: FlowContext,
    uow: UnitOfWork,
    action: str,
    outcome: str = "success",
    *,
    factor: str | None = None,
    user_id: str | None = None,
    reason: str | None = None,
    actor: str = USER,
    actor_id: str | None = None,
    refusal: bool = False,
) -> None:
    """The log line, and the record staged in `uow`. The actor's id is the user's own when the
    user acts (`actor_id` names an operator); `reason` is the record's `detail`."""
    audit(action, outcome, factor=factor, user_id=user_id, reason=reason)
    staged = audit_entry(
        ctx,
        action,
        outcome,
        factor=factor,
        user_id=user_id,
        reason=reason,
        actor=actor,
        actor_id=actor_id,
    )
    if refusal:
        uow.audit.keep(staged)
    else:
        uow.audit.add(staged)


def audit_entry(
    ctx: FlowContext,
    action: str,
    outcome: str = "success",
    *,
    factor: str | None = None,
    user_id: str | None = None,
    reason: str | None = None,
    actor: str = USER,
    actor_id: str | None = None,
) -> AuditEntry:
    """The record `record` stages, for a writer that stages it itself (`ports.rotation`)."""
    return entry(
        ctx.clock(),
        action,
        outcome,
        actor=actor,
        actor_id=actor_id if actor_id is not None or actor != USER else user_id,
        user_id=user_id,
        factor=factor,
        detail=reason,
        client_address=client_address.get(),
    )


def refused(
    ctx: FlowContext,
    uow: UnitOfWork,
    action: str,
    *,
    factor: str | None = None,
    user_id: str | None = None,
    reason: str | None = None,
) -> None:
    """A failure, staged so that it is written whether or not the unit commits."""
    record(ctx, uow, action, "failure", factor=factor, user_id=user_id, reason=reason, refusal=True)


async def record_alone(
    ctx: FlowContext,
    action: str,
    outcome: str = "failure",
    *,
    factor: str | None = None,
    user_id: str | None = None,
    reason: str | None = None,
) -> None:
    """The record in a small transaction of its own (a refusal where no unit is open)."""
    async with ctx.uow() as uow:
        record(ctx, uow, action, outcome, factor=factor, user_id=user_id, reason=reason)
        await uow.commit()


def proof_action(action: str) -> tuple[str, str | None]:
    """How a proof of presence is recorded: `reauth` as itself, any other (the password or code
    a sensitive change asks for) as `step_up`, with the change it is for as its detail."""
    return ("reauth", None) if action == "reauth" else ("step_up", action)
