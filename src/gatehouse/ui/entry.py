"""The pages before the account: sign up, verify the code (its delivery followed live), sign in
(password, then a second factor when the account has one), recover the password, sign out. Each
form calls its flow as the API's route does, with the same per-address limits (`guard`)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from gatehouse.domain.users import normalize_email
from gatehouse.selfservice import browser
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.login.schemas import LoginIn, SecondFactorIn
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.recovery.schemas import ForgotIn, ResetIn
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.registration.finish import SignedUp
from gatehouse.selfservice.registration.schemas import RegisterIn, ResendOtpIn, VerifyOtpIn
from gatehouse.ui import returns
from gatehouse.ui.kit import (
    SESSION,
    TICKET,
    Visit,
    clear_cookie,
    form,
    page,
    redirect,
    set_cookie,
    to_sign_in,
    visit,
)
from gatehouse.ui.messages import DELIVERY_KEYS
from gatehouse.ui.outcome import Refusal, attempt, validated
from gatehouse.web.limits import guard

router = APIRouter(include_in_schema=False)
Page = Annotated[Visit, Depends(visit)]
METHODS = ("totp", "passkey", "recovery_code")  # of a second step: which forms it shows


def _optional(value: str | None) -> str | None:
    return value if value else None


def _with_return(path: str, return_to: str, notice: str | None = None) -> str:
    query = {k: v for k, v in (("notice", notice), ("return_to", return_to)) if v}
    return f"{path}?{urlencode(query)}" if query else path


def signed_in_answer(v: Visit, cookie: str, return_to: str) -> Response:
    """Where a sign-in ends: the session's cookie, and the allowed `return_to` or the account."""
    v.stale_session = False  # whatever cookie came, this one replaces it
    response = redirect(v, returns.target(return_to, v.kit.return_to))
    ttl = int(v.ctx.policy.refresh_family_max.total_seconds())
    set_cookie(v, response, SESSION, cookie, max_age=ttl)
    return response


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/signin", status_code=303)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/signin", status_code=303)


# --- sign-up -------------------------------------------------------------------------------


def _signup_page(v: Visit, status: int = 200, **context: Any) -> Response:
    return page(v, "signup.html", status, title=v.t("title_signup"), page_name="signup", **context)


@router.get("/ui/signup")
async def signup_page(v: Page) -> Response:
    if v.signed is not None:
        return redirect(v, returns.target(v.request.query_params.get("return_to"), v.kit.return_to))
    return _signup_page(v)


@router.post("/ui/signup")
async def signup(v: Page) -> Response:
    f = await form(v, session=False)
    return_to = f.get("return_to", "")
    values = {k: f.get(k, "") for k in ("name", "email", "phone")}
    data = {k: f.get(k, "") for k in ("name", "email", "password")}
    body = validated(RegisterIn, {**data, "phone": _optional(f.get("phone"))})
    if isinstance(body, Refusal):
        return _signup_page(v, body.status, error=body, values=values, return_to=return_to)

    async def run() -> registration.Accepted:
        await guard(v.request, "register")
        return await registration.register(
            v.ctx, name=body.name, email=str(body.email), password=body.password, phone=body.phone
        )

    accepted = await attempt(run())
    if isinstance(accepted, Refusal):
        return _signup_page(v, accepted.status, error=accepted, values=values, return_to=return_to)
    response = redirect(v, _with_return("/ui/verify", return_to, "n_code_sent"))
    ticket = browser.seal_ticket(v.ctx, accepted.email, accepted.message_id)
    set_cookie(v, response, TICKET, ticket, max_age=accepted.expires_in)
    return response


# --- verify --------------------------------------------------------------------------------


def _verify_page(v: Visit, status: int = 200, **context: Any) -> Response:
    ticket = browser.open_ticket(v.ctx, v.request.cookies.get(v.kit.cookie(TICKET)))
    context.setdefault("email", ticket.email if ticket else "")
    return page(
        v,
        "verify.html",
        status,
        title=v.t("title_verify"),
        page_name="verify",
        tracking=ticket is not None,
        delivery_keys=DELIVERY_KEYS,
        **context,
    )


@router.get("/ui/verify")
async def verify_page(v: Page) -> Response:
    return _verify_page(v)


@router.post("/ui/verify")
async def verify(v: Page) -> Response:
    f = await form(v, session=False)
    return_to, email = f.get("return_to", ""), f.get("email", "")
    body = validated(VerifyOtpIn, {"email": email, "otp": f.get("otp", "")})
    if isinstance(body, Refusal):
        return _verify_page(v, body.status, error=body, email=email, return_to=return_to)

    async def run() -> SignedUp:
        await guard(v.request, "verify")
        return await registration.verify_sign_up(v.ctx, email=str(body.email), otp=body.otp)

    done = await attempt(run())
    if isinstance(done, Refusal):
        return _verify_page(v, done.status, error=done, email=email, return_to=return_to)
    ticket = browser.open_ticket(v.ctx, v.request.cookies.get(v.kit.cookie(TICKET)))
    if done.password_required:
        response = redirect(v, "/ui/recover?notice=n_password_required")
    elif ticket is not None and ticket.email == normalize_email(str(body.email)):
        # This browser signed up with the password; the code shows it reads the mail.
        user_agent = v.request.headers.get("user-agent")
        cookie = await attempt(browser.open_after_sign_up(v.ctx, done.user["id"], user_agent))
        if isinstance(cookie, Refusal):
            response = redirect(v, _with_return("/ui/signin", return_to, "n_verified"))
        else:
            response = signed_in_answer(v, cookie, return_to)
    else:
        response = redirect(v, _with_return("/ui/signin", return_to, "n_verified"))
    clear_cookie(v, response, TICKET)
    return response


@router.post("/ui/verify/resend")
async def resend(v: Page) -> Response:
    f = await form(v, session=False)
    return_to, email = f.get("return_to", ""), f.get("email", "")
    body = validated(ResendOtpIn, {"email": email})
    if isinstance(body, Refusal):
        return _verify_page(v, body.status, error=body, email=email, return_to=return_to)

    async def run() -> registration.Accepted:
        await guard(v.request, "resend")
        return await registration.resend(v.ctx, email=str(body.email))

    accepted = await attempt(run())
    if isinstance(accepted, Refusal):
        return _verify_page(v, accepted.status, error=accepted, email=email, return_to=return_to)
    response = redirect(v, _with_return("/ui/verify", return_to, "n_resent"))
    ticket = browser.seal_ticket(v.ctx, accepted.email, accepted.message_id)
    set_cookie(v, response, TICKET, ticket, max_age=accepted.expires_in)
    return response


# --- sign-in -------------------------------------------------------------------------------


def _signin_page(v: Visit, status: int = 200, **context: Any) -> Response:
    return page(v, "signin.html", status, title=v.t("title_signin"), page_name="signin", **context)


def _mfa_page(
    v: Visit, challenge: second.MfaChallenge, return_to: str, status: int = 200, **context: Any
) -> Response:
    return page(
        v,
        "signin_mfa.html",
        status,
        title=v.t("title_mfa"),
        page_name="signin-mfa",
        mfa_token=challenge.mfa_token,
        methods=challenge.methods,
        return_to=return_to,
        **context,
    )


@router.get("/ui/signin")
async def signin_page(v: Page) -> Response:
    if v.signed is not None:
        return redirect(v, returns.target(v.request.query_params.get("return_to"), v.kit.return_to))
    return _signin_page(v)


@router.post("/ui/signin")
async def signin(v: Page) -> Response:
    f = await form(v, session=False)
    return_to, values = f.get("return_to", ""), {"email": f.get("email", "")}
    body = validated(LoginIn, {"email": f.get("email", ""), "password": f.get("password", "")})
    if isinstance(body, Refusal):
        return _signin_page(v, body.status, error=body, values=values, return_to=return_to)

    async def run() -> Any:
        await guard(v.request, "login")
        return await login_flow.login(
            v.ctx,
            email=str(body.email),
            password=body.password,
            user_agent=v.request.headers.get("user-agent"),
        )

    opened = await attempt(run())
    if isinstance(opened, Refusal):
        return _signin_page(v, opened.status, error=opened, values=values, return_to=return_to)
    if isinstance(opened, second.MfaChallenge):
        return _mfa_page(v, opened, return_to)
    return signed_in_answer(v, browser.cookie_for(v.ctx, opened), return_to)


@router.post("/ui/signin/mfa")
async def signin_mfa(v: Page) -> Response:
    f = await form(v, session=False)
    return_to, token = f.get("return_to", ""), f.get("mfa_token", "")
    given = {k: f[k] for k in ("code", "recovery_code") if f.get(k)}
    body = validated(SecondFactorIn, {"mfa_token": token, **given})
    # The methods, for the forms to show again: what the token's account has (the token says).
    methods = tuple(m for m in f.get("methods", "").split(",") if m in METHODS)
    challenge = second.MfaChallenge(token, methods, 0)
    if isinstance(body, Refusal):
        return _mfa_page(v, challenge, return_to, body.status, error=body)

    async def run() -> Any:
        await guard(v.request, "login")
        return await second.finish(
            v.ctx,
            mfa_token=body.mfa_token,
            code=body.code,
            recovery_code=body.recovery_code,
            user_agent=v.request.headers.get("user-agent"),
        )

    opened = await attempt(run(), context="mfa")
    if isinstance(opened, Refusal):
        if opened.code == "invalid_token":  # expired, spent or out of tries: start again
            return _signin_page(v, opened.status, error=opened, return_to=return_to)
        return _mfa_page(v, challenge, return_to, opened.status, error=opened)
    return signed_in_answer(v, browser.cookie_for(v.ctx, opened), return_to)


@router.post("/ui/signout")
async def signout(v: Page) -> Response:
    await form(v, session=True)
    assert v.signed is not None  # form() sent any other browser to the sign-in page
    await attempt(browser.sign_out(v.ctx, v.signed))
    return to_sign_in(v, "n_signed_out")


# --- recovery ------------------------------------------------------------------------------


def _recover_page(v: Visit, status: int = 200, **context: Any) -> Response:
    context.setdefault("step", "request")
    title = v.t("title_reset" if context["step"] == "reset" else "title_recover")
    return page(v, "recover.html", status, title=title, page_name="recover", **context)


@router.get("/ui/recover")
async def recover_page(v: Page) -> Response:
    return _recover_page(v)


@router.post("/ui/recover")
async def recover(v: Page) -> Response:
    f = await form(v, session=False)
    values = {k: f.get(k, "") for k in ("email", "phone", "channel")}
    data = {k: _optional(f.get(k)) for k in ("email", "phone")}
    body = validated(ForgotIn, {**data, "channel": f.get("channel") or "email"})
    if isinstance(body, Refusal):
        return _recover_page(v, body.status, error=body, values=values)

    async def run() -> int:
        await guard(v.request, "forgot")
        email = str(body.email) if body.email else None
        return await recovery.request(v.ctx, email=email, phone=body.phone, channel=body.channel)

    sent = await attempt(run())
    if isinstance(sent, Refusal):
        return _recover_page(v, sent.status, error=sent, values=values)
    return _recover_page(v, step="reset", values=values, notice="n_reset_sent")


@router.post("/ui/recover/reset")
async def reset(v: Page) -> Response:
    f = await form(v, session=False)
    values = {k: f.get(k, "") for k in ("email", "phone")}
    data = {k: _optional(f.get(k)) for k in ("email", "phone")}
    secret = {"otp": f.get("otp", ""), "new_password": f.get("new_password", "")}
    body = validated(ResetIn, {**data, **secret})
    if isinstance(body, Refusal):
        return _recover_page(v, body.status, step="reset", error=body, values=values)

    async def run() -> str:
        await guard(v.request, "reset")
        return await recovery.reset(
            v.ctx,
            otp=body.otp,
            new_password=body.new_password,
            email=str(body.email) if body.email else None,
            phone=body.phone,
        )

    done = await attempt(run())
    if isinstance(done, Refusal):
        return _recover_page(v, done.status, step="reset", error=done, values=values)
    return to_sign_in(v, "n_reset")
