"""`/api/admin/users` and `/api/admin/audit` (DESIGN 12): user administration and the audit
trail over HTTP. Included in `admin/http.py`'s router, so behind the same admin key (404 while
it is unset, listed in OpenAPI only when set). The use cases are `admin/users.py` and
`admin/audit.py`, shared with `gatehouse users …` and `gatehouse audit …`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from gatehouse.admin import audit, users
from gatehouse.bootstrap import Services
from gatehouse.web.deps import services
from gatehouse.web.responses import JSON, success
from gatehouse.web.schemas import Envelope, Out, error_answers

router = APIRouter()
Svc = Annotated[Services, Depends(services)]
OPERATOR = "admin-api"  # the audit records' actor_id for what is done through this door
REFUSED = (401, 404, 422, 503)
NO_USER = {404: "Admin API off, or no such user"}
Limit = Annotated[int, Query(ge=1, le=200)]


class AdminUserOut(Out):
    """An account as an operator sees it in a list: never a hash; the phone masked."""

    id: str
    email: str
    name: str
    phone: str | None
    email_verified: bool
    disabled: bool
    disabled_at: AwareDatetime | None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class UsersData(Out):
    users: list[AdminUserOut]
    next_cursor: str | None


class AdminSessionOut(Out):
    id: str
    created_at: AwareDatetime
    last_used_at: AwareDatetime
    user_agent: str | None
    amr: list[str]
    aal: int


class PasskeyOut(Out):
    id: str
    name: str
    created_at: AwareDatetime
    last_used_at: AwareDatetime | None


class SecondFactorsOut(Out):
    totp: bool
    passkeys: list[PasskeyOut]
    recovery_codes_left: int


class AdminUserDetail(AdminUserOut):
    """One account with its live sessions and its second factors, never their secrets."""

    sessions: list[AdminSessionOut]
    second_factors: SecondFactorsOut


class UserDetailData(Out):
    user: AdminUserDetail


class UserData(Out):
    user: AdminUserOut


class RevokedData(Out):
    user_id: str
    revoked: int


class DeletedData(Out):
    user_id: str


class AuditRecordOut(Out):
    """One record (docs/audit.md): `seq`, `prev_hash` and `hash` are null until the chainer has
    linked it, within a second while a relay runs."""

    id: int
    seq: int | None
    at: AwareDatetime
    actor: Literal["user", "admin", "system"]
    actor_id: str | None
    action: str
    user_id: str | None
    outcome: str
    factor: str | None
    detail: str | None
    client_address: str | None
    prev_hash: str | None
    hash: str | None


class AuditData(Out):
    records: list[AuditRecordOut]
    next_cursor: str | None


@router.get("/users", response_model=Envelope[UsersData], responses=error_answers(*REFUSED))
async def find_users(
    svc: Svc,
    query: Annotated[str, Query(max_length=320)] = "",
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Limit = 50,
) -> JSON:
    """Accounts by email prefix (all for none), in email order; an exact phone number or an
    account id finds that one. `next_cursor` gives the next page, null at the end."""
    page = await users.find(svc.ctx, svc.user_directory(), query, cursor, limit)
    return success("Users", {"users": page.items, "next_cursor": page.next_cursor})


@router.get(
    "/users/{user_id}",
    response_model=Envelope[UserDetailData],
    responses=error_answers(*REFUSED, meaning=NO_USER),
)
async def show_user(user_id: str, svc: Svc) -> JSON:
    """One account: profile (phone masked), live sessions, second factors (never secrets)."""
    return success("User", {"user": await users.show(svc.ctx, user_id)})


@router.post(
    "/users/{user_id}/disable",
    response_model=Envelope[UserData],
    responses=error_answers(*REFUSED, meaning=NO_USER),
)
async def disable_user(user_id: str, svc: Svc) -> JSON:
    """Disable: every session, refresh token and socket ends at once, and every sign-in is
    refused as a wrong password is, until `enable`."""
    return success("User disabled", {"user": await users.disable(svc.ctx, user_id, OPERATOR)})


@router.post(
    "/users/{user_id}/enable",
    response_model=Envelope[UserData],
    responses=error_answers(*REFUSED, meaning=NO_USER),
)
async def enable_user(user_id: str, svc: Svc) -> JSON:
    """The account may sign in again."""
    return success("User enabled", {"user": await users.enable(svc.ctx, user_id, OPERATOR)})


@router.post(
    "/users/{user_id}/sessions/revoke",
    response_model=Envelope[RevokedData],
    responses=error_answers(*REFUSED, meaning=NO_USER),
)
async def revoke_user_sessions(user_id: str, svc: Svc) -> JSON:
    """End every session of the account (the account may sign in again)."""
    revoked = await users.revoke_sessions(svc.ctx, user_id, OPERATOR)
    return success("Sessions revoked", {"user_id": user_id, "revoked": revoked})


@router.delete(
    "/users/{user_id}",
    response_model=Envelope[DeletedData],
    responses=error_answers(*REFUSED, meaning=NO_USER),
)
async def delete_user(user_id: str, svc: Svc) -> JSON:
    """Erase the account, its factors and sessions (as its owner's deletion does)."""
    await users.delete(svc.ctx, user_id, OPERATOR)
    return success("User deleted", {"user_id": user_id})


@router.get("/audit", response_model=Envelope[AuditData], responses=error_answers(*REFUSED))
async def audit_records(
    svc: Svc,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 100,
) -> JSON:
    """Audit records newest first: of one user, of one `type` (the action; `login*` for a
    prefix), from `since` to before `until` (ISO 8601 with an offset). Cursor pagination."""
    page = await audit.records(
        svc.audit_store(),
        user_id=user_id,
        action=kind,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return success("Audit records", {"records": page.items, "next_cursor": page.next_cursor})
