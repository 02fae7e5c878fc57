"""A user's own sessions: list them, end one; the password and recency checks of a step-up
(`selfservice/mfa/proof.py` adds the second factor and `reauth`)."""

from __future__ import annotations

from typing import Any

from gatehouse.domain.sessions import SessionRecord, is_alive, is_recent
from gatehouse.domain.throttle import FAILURE_WINDOW_SECONDS
from gatehouse.domain.tokens import AccessClaims
from gatehouse.domain.users import User
from gatehouse.errors import InvalidCredentials, NotFound, ReauthRequired
from gatehouse.selfservice.audit import audit, proof_action, record, record_alone
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.limits import sign_in_throttle
from gatehouse.selfservice.sessions.flow import announce_revoked, authenticate, end_session

DELETED = "session_deleted"  # the revocation reason of DELETE /api/auth/sessions/{id}


def session_view(session: SessionRecord, *, current: bool) -> dict[str, Any]:
    """A session as its owner sees it: never its user id, tokens or revocation details."""
    return {
        "id": session.id,
        "created_at": session.created_at.isoformat(),
        "last_used_at": session.last_used_at.isoformat(),
        "user_agent": session.user_agent,
        "amr": list(session.amr),
        "aal": session.aal,
        "current": current,
    }


async def list_sessions(ctx: FlowContext, *, token: str) -> tuple[str, list[dict[str, Any]]]:
    """The user's id and their live sessions, newest first, the caller's marked `current`."""
    async with ctx.reader() as uow:
        user, claims = await authenticate(ctx, uow, token)
        found = await uow.sessions.list_live_for_user(user.id)
    now, policy = ctx.clock(), ctx.policy
    # Not revoked is not enough: a session whose refresh tokens all expired is over too.
    live = [
        s
        for s in found
        if s.id == claims.sid or is_alive(s, now, policy.refresh_ttl, policy.refresh_family_max)
    ]
    return user.id, [session_view(s, current=s.id == claims.sid) for s in live]


async def revoke_session(ctx: FlowContext, *, token: str, session_id: str) -> str:
    """End one of the user's sessions (its refresh tokens, then its access tokens and sockets at
    once). Someone else's session and an unknown one are the same 404. Returns the user id."""
    async with ctx.uow() as uow:
        user, _claims = await authenticate(ctx, uow, token)
        session = await uow.sessions.get(session_id)
        if session is None or session.user_id != user.id or session.revoked_at is not None:
            audit("session.revoke", "failure", factor="access_token", user_id=user.id)
            raise NotFound("No such session")
        await end_session(ctx, uow, user.id, session.id, DELETED)
        record(ctx, uow, "session.revoke", factor="access_token", user_id=user.id)
        await uow.commit()
    await announce_revoked(ctx, user.id, DELETED, session.id)
    return user.id


async def prove_password(
    ctx: FlowContext,
    user: User,
    password: str,
    *,
    action: str,
    message: str | None = None,
    clear: bool = True,
) -> None:
    """Check the account's password inside a session as a sign-in checks it: the sign-in
    failure throttle applies and a wrong password counts in it, so a stolen access token is
    no faster an oracle for the password than the login form."""
    key, failures = await sign_in_throttle(
        ctx, user.email, action, factor="password", user_id=user.id
    )
    ok, _ = await ctx.hasher.verify(user.password_hash, password)
    name, detail = proof_action(action)
    outcome = "success" if ok else "failure"
    await record_alone(ctx, name, outcome, factor="password", user_id=user.id, reason=detail)
    if not ok:
        await ctx.failures.add(key, ctx.clock().timestamp(), FAILURE_WINDOW_SECONDS)
        raise InvalidCredentials(message or "The password is wrong")
    # Not when a second factor must follow (`clear=False`): a right password must not wipe
    # the count of wrong codes that came with it.
    if failures and clear:
        await ctx.failures.clear(key)


def require_recent(ctx: FlowContext, claims: AccessClaims, user_id: str, action: str) -> None:
    """A sensitive change without a password in its body: the session must have proved a
    factor within the step-up window (`auth_time` of its access token), else 403."""
    if not is_recent(claims.auth_time, ctx.clock(), ctx.policy.step_up):
        audit(action, "failure", factor="access_token", user_id=user_id, reason="reauth_required")
        raise ReauthRequired()
