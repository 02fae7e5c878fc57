"""The account page and its forms: profile, phone (with its code), password, passkeys (rename,
remove; adding is the script's, `ui/api.py`), the authenticator app with its QR code, recovery
codes, sessions, deletion, and the re-authentication a sensitive change may ask for first.
Every form is a POST with the session's CSRF token; each calls its flow with an access token
minted for the request from the cookie's session."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from gatehouse.selfservice import browser
from gatehouse.selfservice.mfa import flow as mfa
from gatehouse.selfservice.mfa import proof
from gatehouse.selfservice.mfa.schemas import TotpConfirmIn
from gatehouse.selfservice.passkeys import flow as passkeys
from gatehouse.selfservice.passkeys import rename as passkey_names
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.profile import phone
from gatehouse.selfservice.profile.schemas import PhoneVerifyIn, ProfileDeleteIn, ProfileUpdateIn
from gatehouse.selfservice.sessions import manage
from gatehouse.selfservice.sessions.schemas import ReauthIn
from gatehouse.ui.kit import Visit, form, page, redirect, to_sign_in, visit
from gatehouse.ui.messages import LIVE_KEYS
from gatehouse.ui.outcome import Refusal, attempt, validated
from gatehouse.web.limits import guard

router = APIRouter(prefix="/ui/account", include_in_schema=False)
Page = Annotated[Visit, Depends(visit)]
Id = Annotated[str, Path(min_length=1, max_length=64)]
ACCOUNT = "/ui/account"


def when(value: str | datetime | None) -> str:
    """A stored time as the page shows it: `2025-06-01 14:05 UTC`."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


async def _account_data(v: Visit) -> dict[str, Any]:
    assert v.signed is not None
    ctx, token = v.ctx, v.signed.token
    user = await profile.read(ctx, token=token)
    keys = await passkeys.list_passkeys(ctx, token=token)
    methods = await mfa.methods_of(ctx, token=token)
    _user_id, found = await manage.list_sessions(ctx, token=token)
    return {
        "user": user,
        "phone_pending": phone.live_index(v.signed.user, ctx.clock()) is not None,
        "passkeys": [
            {**p, "created": when(p["created_at"]), "used": when(p["last_used_at"])} for p in keys
        ],
        "mfa": methods,
        "second_factor": methods["totp"] or methods["passkeys"],
        "sessions": [
            {**s, "created": when(s["created_at"]), "used": when(s["last_used_at"])} for s in found
        ],
        "session_id": v.signed.session.id,
        "live_keys": LIVE_KEYS,
    }


async def account(v: Visit, status: int = 200, **context: Any) -> Response:
    """The account page as it is now; `context` adds what one answer shows once (an error and
    the form it concerns, the QR code of a set-up, new recovery codes, the reauth step)."""
    if v.signed is None:
        return to_sign_in(v)
    data = await attempt(_account_data(v))
    if isinstance(data, Refusal):
        if data.code == "invalid_token":
            return to_sign_in(v)
        return page(v, "error.html", data.status, title=v.t("title_error"), error=data)
    error: Refusal | None = context.get("error")
    context.setdefault("form", "")
    context.setdefault(
        "reauth", (error is not None and error.reauth) or context["form"] == "reauth"
    )
    context.setdefault("totp_setup", None)
    context.setdefault("typed_phone", None)
    context.setdefault("recovery_codes", None)
    title = v.t("title_account")
    return page(v, "account.html", status, title=title, page_name="account", **data, **context)


async def _change(
    v: Visit,
    form_name: str,
    work: Callable[[], Awaitable[Any]],
    done: str | Callable[[Any], Response | Awaitable[Response]],
    context: str = "",
    **shown: Any,
) -> Response:
    """Run a change; on a refusal the page again with the message by its form (and the reauth
    step when that is why; `shown` keeps what was typed), else `done`: a notice key to show,
    or what to answer."""
    result = await attempt(work(), context)
    if isinstance(result, Refusal):
        if result.code == "invalid_token":  # the session ended meanwhile
            return to_sign_in(v)
        return await account(v, result.status, error=result, form=form_name, **shown)
    if isinstance(done, str):
        return redirect(v, f"{ACCOUNT}?notice={done}")
    answer = done(result)
    return answer if isinstance(answer, Response) else await answer


def _token(v: Visit) -> str:
    assert v.signed is not None  # form(session=True) sent anyone else to the sign-in page
    return v.signed.token


@router.get("")
async def account_page(v: Page) -> Response:
    return await account(v)


@router.post("/profile")
async def update_profile(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(ProfileUpdateIn, {"name": f.get("name", "")})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="profile")
    token = _token(v)
    return await _change(
        v, "profile", lambda: profile.update(v.ctx, token=token, name=body.name), "n_saved"
    )


@router.post("/phone")
async def update_phone(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(ProfileUpdateIn, {"phone": f.get("phone", "")})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="phone")
    token, number = _token(v), body.phone or ""

    def done(updated: profile.Updated) -> Response:
        notice = "n_phone_code" if updated.pending else "n_saved" if number else "n_phone_removed"
        return redirect(v, f"{ACCOUNT}?notice={notice}#phone")

    # A refusal (a reauth to do first, a limit) shows the number again as it was typed.
    return await _change(
        v,
        "phone",
        lambda: profile.update(v.ctx, token=token, phone=number),
        done,
        typed_phone=number,
    )


@router.post("/phone/verify")
async def verify_phone(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(PhoneVerifyIn, {"otp": f.get("otp", "")})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="phone-verify")
    token = _token(v)

    async def work() -> Any:
        await guard(v.request, "phone_verify")
        return await phone.verify(v.ctx, token=token, otp=body.otp)

    return await _change(v, "phone-verify", work, "n_phone_verified")


@router.post("/password")
async def change_password(v: Page) -> Response:
    f = await form(v, session=True)
    data = {k: f.get(k, "") for k in ("password", "current_password")}
    body = validated(ProfileUpdateIn, {**data, "code": f.get("code") or None})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="password")
    token = _token(v)

    async def work() -> Any:
        return await profile.update(
            v.ctx,
            token=token,
            password=body.password,
            current_password=body.current_password,
            code=body.code,
        )

    # Every session ends with a new password, this one too: sign in again with it.
    return await _change(v, "password", work, lambda _: to_sign_in(v, "n_password_changed"))


@router.post("/passkeys/{passkey_id}/rename")
async def rename_passkey(passkey_id: Id, v: Page) -> Response:
    f = await form(v, session=True)
    token, name = _token(v), f.get("name", "")[:200]

    async def work() -> Any:
        return await passkey_names.rename(v.ctx, token=token, passkey_id=passkey_id, name=name)

    return await _change(v, "passkeys", work, "n_passkey_renamed", context="passkey")


@router.post("/passkeys/{passkey_id}/remove")
async def remove_passkey(passkey_id: Id, v: Page) -> Response:
    await form(v, session=True)
    token = _token(v)

    async def work() -> Any:
        return await passkeys.remove(v.ctx, token=token, passkey_id=passkey_id)

    return await _change(v, "passkeys", work, "n_passkey_removed")


def _qr(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@router.post("/totp")
async def totp_setup(v: Page) -> Response:
    await form(v, session=True)
    token = _token(v)

    async def work() -> dict[str, Any]:
        await guard(v.request, "mfa")
        return await mfa.totp_setup(v.ctx, token=token)

    async def done(data: dict[str, Any]) -> Response:
        shown = {"secret": data["secret"], "qr": _qr(data["qr_svg"])}
        return await account(v, totp_setup=shown)

    return await _change(v, "totp", work, done)


@router.post("/totp/confirm")
async def totp_confirm(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(TotpConfirmIn, {"code": f.get("code", "")})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="totp-confirm")
    token = _token(v)

    async def work() -> dict[str, Any]:
        await guard(v.request, "mfa")
        return await mfa.totp_confirm(v.ctx, token=token, code=body.code)

    async def done(data: dict[str, Any]) -> Response:
        return await account(v, recovery_codes=data["recovery_codes"], notice="n_totp_on")

    return await _change(v, "totp-confirm", work, done)


@router.post("/totp/remove")
async def totp_remove(v: Page) -> Response:
    await form(v, session=True)
    token = _token(v)

    async def work() -> None:
        await guard(v.request, "mfa")
        await mfa.totp_remove(v.ctx, token=token)

    return await _change(v, "totp", work, "n_totp_removed")


@router.post("/recovery-codes")
async def recovery_codes(v: Page) -> Response:
    await form(v, session=True)
    token = _token(v)

    async def work() -> dict[str, Any]:
        await guard(v.request, "mfa")
        return await mfa.replace_recovery_codes(v.ctx, token=token)

    async def done(data: dict[str, Any]) -> Response:
        return await account(v, recovery_codes=data["recovery_codes"])

    return await _change(v, "recovery", work, done)


@router.post("/sessions/{session_id}/signout")
async def sign_out_session(session_id: Id, v: Page) -> Response:
    await form(v, session=True)
    signed = v.signed
    assert signed is not None
    if session_id == signed.session.id:  # this device's own: a sign-out
        await attempt(browser.sign_out(v.ctx, signed))
        return to_sign_in(v, "n_signed_out")
    token = _token(v)

    async def work() -> Any:
        return await manage.revoke_session(v.ctx, token=token, session_id=session_id)

    return await _change(v, "sessions", work, "n_session_ended")


@router.post("/signout-everywhere")
async def sign_out_everywhere(v: Page) -> Response:
    await form(v, session=True)
    assert v.signed is not None
    signed = v.signed
    return await _change(
        v,
        "sessions",
        lambda: browser.sign_out_everywhere(v.ctx, signed),
        lambda _: to_sign_in(v, "n_signed_out_everywhere"),
    )


@router.post("/delete")
async def delete_account(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(
        ProfileDeleteIn, {"password": f.get("password", ""), "code": f.get("code") or None}
    )
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="delete")
    token = _token(v)

    async def work() -> Any:
        return await profile.delete(v.ctx, token=token, password=body.password, code=body.code)

    return await _change(v, "delete", work, lambda _: to_sign_in(v, "n_deleted"))


@router.post("/reauth")
async def reauth(v: Page) -> Response:
    f = await form(v, session=True)
    body = validated(ReauthIn, {"password": f.get("password", ""), "code": f.get("code") or None})
    if isinstance(body, Refusal):
        return await account(v, body.status, error=body, form="reauth")
    token = _token(v)

    async def work() -> Any:
        await guard(v.request, "reauth")
        return await proof.reauth(v.ctx, token=token, password=body.password, code=body.code)

    return await _change(v, "reauth", work, "n_reauthed")
