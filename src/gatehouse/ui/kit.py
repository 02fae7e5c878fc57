"""What every page request shares: the kit built once per app (templates, the delivery log, cookie
names and the Content-Security-Policy's parts), the visit (the request's browser, its session if
its cookie names a live one, its language), the CSRF and origin checks of every state change,
and the page response with its own headers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from gatehouse.bootstrap import Services
from gatehouse.config import web_origin
from gatehouse.ports import DeliveryLog
from gatehouse.selfservice import browser
from gatehouse.selfservice.context import FlowContext
from gatehouse.ui.outcome import Refusal, attempt
from gatehouse.ui.text import Text, preferred

SESSION, BROWSER, TICKET = "gatehouse_session", "gatehouse_browser", "gatehouse_signup"
CSRF_FIELD, CSRF_HEADER = "csrf", "x-csrf-token"
FORM = "application/x-www-form-urlencoded"
# A Host header fit to be written into the policy's connect-src (websocket) entry.
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")
# A browser only sends these from its own pages (or when the user typed the address).
_SAME_SITE = ("same-origin", "none")


@dataclass(frozen=True)
class Kit:
    """Built once per app by `routes.install`."""

    templates: jinja2.Environment
    deliveries: DeliveryLog
    secure: bool  # GATEHOUSE_PUBLIC_URL is https: Secure cookies with the __Host- prefix
    public_origin: str
    return_to: tuple[str, ...]

    @classmethod
    def build(cls, services: Services) -> Kit:
        settings = services.settings
        templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gatehouse.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        return cls(
            templates=templates,
            deliveries=services.delivery_log(),
            secure=settings.public_url.lower().startswith("https://"),
            public_origin=web_origin(settings.public_url),
            return_to=tuple(settings.ui_return_to),
        )

    def cookie(self, name: str) -> str:
        return f"__Host-{name}" if self.secure else name


class PageRefusal(Exception):
    """Raised by a check with the answer to send instead (routes.install answers it)."""

    def __init__(self, response: Response):
        super().__init__("page refusal")
        self.response = response


@dataclass
class Visit:
    """One page request: its browser, its session, its language."""

    request: Request
    kit: Kit
    ctx: FlowContext
    t: Text
    browser_id: str
    new_browser: bool
    signed: browser.SignedIn | None
    stale_session: bool  # a session cookie that names no live session: cleared on the answer

    @property
    def binding(self) -> str:
        if self.signed is not None:
            return "s:" + self.signed.session.id
        return "b:" + self.browser_id

    def csrf(self) -> str:
        return browser.csrf_token(self.ctx, self.binding)

    @property
    def from_script(self) -> bool:
        """A request of our pages' scripts (/ui/api/), not a page."""
        return self.request.url.path.startswith("/ui/api/")

    def own_origins(self) -> set[str]:
        origins = {self.kit.public_origin}
        host = self.request.headers.get("host", "")
        if _HOST.match(host):
            origins.add(f"{self.request.url.scheme}://{host.lower()}")
        return origins


async def visit(request: Request) -> Visit:
    """FastAPI dependency of every page route."""
    services: Services = request.app.state.services
    kit: Kit = request.app.state.ui
    ctx = services.ctx
    cookies = request.cookies
    known = cookies.get(kit.cookie(BROWSER))
    fresh = not browser.valid_browser_id(known)
    v = Visit(
        request=request,
        kit=kit,
        ctx=ctx,
        t=Text(preferred(request.headers.get("accept-language"))),
        browser_id=browser.new_browser_id() if fresh else str(known),
        new_browser=fresh,
        signed=None,
        stale_session=False,
    )
    raw_session = cookies.get(kit.cookie(SESSION))
    if raw_session:
        found = await attempt(browser.signed_in(ctx, raw_session))
        if isinstance(found, Refusal):  # the database is away: say so, keep the cookie
            if v.from_script:
                raise PageRefusal(finish(v, api_refusal(v, found)))
            raise PageRefusal(page(v, "error.html", found.status, error=found))
        v.signed, v.stale_session = found, found is None
    return v


def _refuse(v: Visit, json: bool) -> PageRefusal:
    refusal = Refusal(403, "forbidden", "err_csrf")
    if json:
        return PageRefusal(finish(v, api_refusal(v, refusal)))
    return PageRefusal(
        page(v, "error.html", refusal.status, title=v.t("title_error"), error=refusal)
    )


def check_origin(v: Visit, *, json: bool = False) -> None:
    """A state change must come from our own pages: a cross-site request is refused (403)."""
    headers = v.request.headers
    site = headers.get("sec-fetch-site")
    if site is not None and site not in _SAME_SITE:
        raise _refuse(v, json)
    origin = headers.get("origin")
    if origin is not None and origin != "null" and origin.lower() not in v.own_origins():
        raise _refuse(v, json)


def check_csrf(v: Visit, token: str | None, *, session: bool, json: bool = False) -> None:
    """The token must be the one of this browser's session (`session`) or, on the pages before
    sign-in, of this browser; a browser without its cookie cannot have one."""
    if session and v.signed is None:
        if json:
            refusal = Refusal(401, "invalid_token", "err_session")
            raise PageRefusal(finish(v, api_refusal(v, refusal)))
        raise PageRefusal(to_sign_in(v))
    # A page shown while signed in carries the session's token: the pages before sign-in
    # (verify, say) take it as well as the browser's.
    bindings = [v.binding] if session else ["b:" + v.browser_id, v.binding]
    if v.new_browser or not any(browser.csrf_ok(v.ctx, b, token) for b in bindings):
        raise _refuse(v, json)


async def form(v: Visit, *, session: bool) -> dict[str, str]:
    """The posted form, once its origin and CSRF token are checked."""
    check_origin(v)
    body = await v.request.body()
    fields: dict[str, str] = {}
    if v.request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM:
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            pairs = []
        for key, value in pairs:
            fields.setdefault(key, value)
    check_csrf(v, fields.pop(CSRF_FIELD, None), session=session)
    return fields


def csp(v: Visit) -> str:
    """The pages' policy: scripts, styles and connections to this origin only (the socket's
    websocket URL spelled out for browsers that do not count it as 'self'), images from here
    or data: (the QR code), forms posted here or, after sign-in, redirected to an allowed
    application origin."""
    sockets = sorted(
        f"{scheme}://{origin.split('://', 1)[1]}"
        for origin in v.own_origins()
        for scheme in ("ws", "wss")
    )
    form_action = " ".join(("'self'", *v.kit.return_to))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {' '.join(sockets)}; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def finish(v: Visit, response: Response) -> Response:
    """The answer's cookies (a new browser id, a dead session's cookie cleared) and headers.

    Only a page gives a browser its id: a script's request without one (a tab left open after
    the cookies were cleared, say) would otherwise replace the id a newer page's form is bound
    to, and that form would then be refused as forged."""
    if v.new_browser and not v.from_script:
        set_cookie(v, response, BROWSER, v.browser_id, max_age=400 * 24 * 3600)
    if v.stale_session:
        clear_cookie(v, response, SESSION)
    response.headers["Content-Security-Policy"] = csp(v)
    response.headers["Cache-Control"] = "no-store"
    # Our own form posts then carry their true Origin (no-referrer would send `null`).
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Vary"] = "Cookie, Accept-Language"
    return response


def set_cookie(v: Visit, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        v.kit.cookie(name),
        value,
        max_age=max_age,
        path="/",
        secure=v.kit.secure,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(v: Visit, response: Response, name: str) -> None:
    response.delete_cookie(
        v.kit.cookie(name), path="/", secure=v.kit.secure, httponly=True, samesite="lax"
    )


def page(v: Visit, template: str, status: int = 200, **context: Any) -> Response:
    """A rendered page. `error` (a Refusal) and `notice` (a message key) are shown on it."""
    context.setdefault("page_name", template.removesuffix(".html"))
    context.setdefault("title", v.t("title_error"))
    error: Refusal | None = context.pop("error", None)
    notice = context.pop("notice", None)
    if notice is None:
        asked = v.request.query_params.get("notice", "")
        notice = asked if asked.startswith("n_") and v.t.has(asked) else None
    html = v.kit.templates.get_template(template).render(
        t=v.t,
        lang=v.t.language,
        csrf=v.csrf(),
        signed=v.signed,
        error=error,
        error_text=error.message(v.t) if error else None,
        notice_text=v.t(notice) if notice else None,
        return_to=context.pop("return_to", v.request.query_params.get("return_to", "")),
        values=context.pop("values", {}),
        **context,
    )
    headers = error.headers() if error else {}
    return finish(v, HTMLResponse(html, status_code=status, headers=headers))


def redirect(v: Visit, location: str) -> Response:
    """303: the browser follows with a GET."""
    return finish(v, RedirectResponse(location, status_code=303))


def to_sign_in(v: Visit, notice: str | None = None) -> Response:
    """To the sign-in page, the session's cookie cleared (its session ended, or never was)."""
    v.stale_session = True
    return redirect(v, "/ui/signin" + (f"?notice={notice}" if notice else ""))


def api_refusal(v: Visit, refusal: Refusal) -> JSONResponse:
    """A page API's refusal: the code, and the message in the page's language."""
    body: dict[str, Any] = {"status": "error", "code": refusal.code}
    body["message"] = refusal.message(v.t)
    if refusal.retry_after is not None:
        body["retry_after"] = refusal.retry_after
    return JSONResponse(body, status_code=refusal.status, headers=refusal.headers())
