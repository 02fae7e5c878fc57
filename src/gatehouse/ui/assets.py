"""The pages' own scripts, style sheet and icon, served from the package (`ui/static/`): nothing
from another host, nothing of anyone else's code. Only the files named here are served."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from gatehouse.errors import NotFound

router = APIRouter(prefix="/ui/static", include_in_schema=False)
JS, CSS, SVG = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "image/svg+xml"
FILES = {
    "ui.css": CSS,
    "ui.js": JS,
    "webauthn.js": JS,
    "signin.js": JS,
    "verify.js": JS,
    "account.js": JS,
    "live.js": JS,
    "favicon.svg": SVG,
}
# A script, a style sheet or an icon needs nothing: the security headers' own policy.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"


@router.get("/{name}")
async def asset(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFound("No such file")
    body = resources.files("gatehouse.ui").joinpath("static", name).read_bytes()
    # Revalidated on each load (by ETag-less no-cache): a new release is picked up at once.
    headers = {"Content-Security-Policy": ASSET_CSP, "Cache-Control": "no-cache"}
    return Response(body, media_type=media_type, headers=headers)
