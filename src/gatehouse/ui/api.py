"""The pages' own JSON API (`/ui/api/...`), for their scripts only: the browser's cookie and the
CSRF token in `X-CSRF-Token`, JSON bodies, answers `{status, data}` or `{status, code,
message}` with the message in the page's language. It carries what a form cannot: WebAuthn
ceremonies, the code's delivery, the socket's access token, whether the session still lives."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from gatehouse.selfservice import browser
from gatehouse.selfservice.login import second
from gatehouse.selfservice.login.schemas import SecondFactorIn
from gatehouse.selfservice.mfa import proof
from gatehouse.selfservice.passkeys import flow as passkeys
from gatehouse.selfservice.passkeys.schemas import LoginIn, LoginOptionsIn, RegisterIn
from gatehouse.ui import returns
from gatehouse.ui.account import when
from gatehouse.ui.kit import (
    CSRF_HEADER,
    SESSION,
    TICKET,
    PageRefusal,
    Visit,
    api_refusal,
    check_csrf,
    check_origin,
    finish,
    set_cookie,
    visit,
)
from gatehouse.ui.outcome import Refusal, attempt, validated
from gatehouse.web.limits import guard

router = APIRouter(prefix="/ui/api", include_in_schema=False)
Page = Annotated[Visit, Depends(visit)]


def ok(v: Visit, data: dict[str, Any], status: int = 200) -> Response:
    return finish(v, JSONResponse({"status": "success", "data": data}, status_code=status))


def refused(v: Visit, refusal: Refusal) -> Response:
    return finish(v, api_refusal(v, refusal))


async def body_of(v: Visit, *, session: bool) -> dict[str, Any]:
    """The JSON body of a state change from our own page, its CSRF token checked."""
    check_origin(v, json=True)
    kind = v.request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise PageRefusal(refused(v, Refusal(415, "unsupported_media_type", "err_invalid")))
    raw = await v.request.body()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise PageRefusal(refused(v, Refusal(400, "malformed_request", "err_invalid")))
    check_csrf(v, v.request.headers.get(CSRF_HEADER), session=session, json=True)
    return data


def _signed_in(v: Visit, session: Any, return_to: Any) -> Response:
    cookie = browser.cookie_for(v.ctx, session)
    target = returns.target(return_to if isinstance(return_to, str) else None, v.kit.return_to)
    v.stale_session = False
    response = ok(v, {"redirect": target})
    ttl = int(v.ctx.policy.refresh_family_max.total_seconds())
    set_cookie(v, response, SESSION, cookie, max_age=ttl)
    return response


# --- before sign-in ------------------------------------------------------------------------


@router.get("/delivery")
async def delivery(v: Page) -> Response:
    """Where the code of this browser's sign-up is (`browser.delivery_progress`)."""
    ticket = browser.open_ticket(v.ctx, v.request.cookies.get(v.kit.cookie(TICKET)))
    if ticket is None:
        return refused(v, Refusal(404, "not_found", "err_not_found"))
    progress = await attempt(browser.delivery_progress(v.ctx, v.kit.deliveries, ticket))
    if isinstance(progress, Refusal):
        return refused(v, progress)
    return ok(v, progress)


@router.post("/passkeys/signin/options")
async def signin_options(v: Page) -> Response:
    """Options of a passwordless sign-in, or with `mfa_token` of a second step by passkey."""
    data = await body_of(v, session=False)
    body = validated(LoginOptionsIn, data)
    if isinstance(body, Refusal):
        return refused(v, body)

    async def run() -> dict[str, Any]:
        await guard(v.request, "passkey_login")
        user_id = None
        if body.mfa_token is not None:
            user_id = await second.user_of_mfa_token(v.ctx, body.mfa_token)
        return await passkeys.assertion_options(v.ctx, user_id=user_id)

    options = await attempt(run(), context="mfa" if body.mfa_token else "")
    return refused(v, options) if isinstance(options, Refusal) else ok(v, options)


@router.post("/passkeys/signin")
async def passkey_signin(v: Page) -> Response:
    """A passwordless sign-in: the assertion checked, the session's cookie set."""
    data = await body_of(v, session=False)
    return_to = data.pop("return_to", None)
    body = validated(LoginIn, data)
    if isinstance(body, Refusal):
        return refused(v, body)

    async def run() -> Any:
        await guard(v.request, "passkey_login")
        return await passkeys.sign_in(
            v.ctx,
            flow_id=body.flow_id,
            credential=body.credential,
            user_agent=v.request.headers.get("user-agent"),
        )

    opened = await attempt(run())
    return refused(v, opened) if isinstance(opened, Refusal) else _signed_in(v, opened, return_to)


@router.post("/signin/mfa/passkey")
async def mfa_passkey(v: Page) -> Response:
    """The second step of a password sign-in, by passkey."""
    data = await body_of(v, session=False)
    return_to = data.pop("return_to", None)
    body = validated(SecondFactorIn, data)
    if isinstance(body, Refusal):
        return refused(v, body)

    async def run() -> Any:
        await guard(v.request, "login")
        return await second.finish(
            v.ctx,
            mfa_token=body.mfa_token,
            passkey=(body.flow_id or "", body.credential or {}),
            user_agent=v.request.headers.get("user-agent"),
        )

    opened = await attempt(run(), context="mfa")
    return refused(v, opened) if isinstance(opened, Refusal) else _signed_in(v, opened, return_to)


# --- signed in -----------------------------------------------------------------------------


@router.get("/session")
async def session(v: Page) -> Response:
    """Whether the browser's session still lives (the account page asks when its socket drops)."""
    if v.signed is None:
        return refused(v, Refusal(401, "invalid_token", "err_session"))
    return ok(v, {"live": True, "session_id": v.signed.session.id})


@router.post("/token")
async def socket_token(v: Page) -> Response:
    """An access token of the browser's session, for its Socket.IO connection (`auth: {token}`,
    then the `token` event before it expires)."""
    await body_of(v, session=True)
    assert v.signed is not None
    data = {
        "token": v.signed.token,
        "expires_in": v.signed.expires_in,
        "session_id": v.signed.session.id,
    }
    return ok(v, data)


@router.post("/passkeys/options")
async def passkey_options(v: Page) -> Response:
    """Options to add a passkey (recent authentication needed: 403 `reauth_required`)."""
    await body_of(v, session=True)
    assert v.signed is not None
    found = await attempt(passkeys.registration_options(v.ctx, token=v.signed.token))
    return refused(v, found) if isinstance(found, Refusal) else ok(v, found)


@router.post("/passkeys")
async def add_passkey(v: Page) -> Response:
    """The new passkey (its name editable afterwards), with recovery codes when it is the
    account's first second factor."""
    data = await body_of(v, session=True)
    assert v.signed is not None
    body = validated(RegisterIn, data, context="passkey")
    if isinstance(body, Refusal):
        return refused(v, body)
    added = await attempt(
        passkeys.register(
            v.ctx,
            token=v.signed.token,
            flow_id=body.flow_id,
            credential=body.credential,
            name=body.name,
        ),
        context="passkey",
    )
    if isinstance(added, Refusal):
        return refused(v, added)
    passkey, codes = added
    shown = {**passkey, "created": when(passkey["created_at"])}
    return ok(v, {"passkey": shown, "recovery_codes": codes}, status=201)


@router.post("/reauth/options")
async def reauth_options(v: Page) -> Response:
    """Options of a passkey assertion proving presence again (bound to this account)."""
    await body_of(v, session=True)
    assert v.signed is not None
    user_id = v.signed.user.id

    async def run() -> dict[str, Any]:
        await guard(v.request, "reauth")
        return await passkeys.assertion_options(v.ctx, user_id=user_id)

    found = await attempt(run())
    return refused(v, found) if isinstance(found, Refusal) else ok(v, found)


@router.post("/reauth")
async def reauth_passkey(v: Page) -> Response:
    """Presence proved again with a passkey: the session's `auth_time` is now."""
    data = await body_of(v, session=True)
    assert v.signed is not None
    body = validated(LoginIn, data)
    if isinstance(body, Refusal):
        return refused(v, body)
    token = v.signed.token

    async def run() -> Any:
        await guard(v.request, "reauth")
        return await proof.reauth(v.ctx, token=token, passkey=(body.flow_id, body.credential))

    done = await attempt(run())
    return refused(v, done) if isinstance(done, Refusal) else ok(v, {"reauthenticated": True})
