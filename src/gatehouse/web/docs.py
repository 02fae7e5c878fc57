"""`/docs` (Swagger UI) and `/redoc` with nothing from another host: offline, under a strict CSP."""

from __future__ import annotations

import html
import json
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import swagger_ui_default_parameters
from fastapi.responses import FileResponse, HTMLResponse, Response

from gatehouse.errors import NotFound

DOCS, REDOC = "/docs", "/redoc"
ASSETS = f"{DOCS}/assets"
SWAGGER_INIT = f"{DOCS}/swagger-init.js"
JS, CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
# The files fastapi-offline ships (the swagger-ui-dist and redoc bundles), by name: nothing
# else under its folder is served, and nothing of them is copied into this repository.
FILES = {
    "swagger-ui-bundle.js": JS,
    "swagger-ui.css": CSS,
    "redoc.standalone.js": JS,
    "favicon.png": "image/png",
}
_BASE = (
    "default-src 'none'; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Scripts and styles from this origin only: Swagger UI starts from SWAGGER_INIT, not from an
# inline script. ReDoc's styled-components writes its styles into <style> elements at run time
# (hence 'unsafe-inline' for styles, never for scripts) and it searches in a blob: worker; the
# "API docs by Redocly" logo it takes from its CDN is refused by img-src (a missing image).
SWAGGER_CSP = f"{_BASE}; script-src 'self'; style-src 'self'"
REDOC_CSP = f"{_BASE}; script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src blob:"
# What a script, a style sheet or an image needs: nothing (the security headers' own policy).
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
{head}
</head>
<body>
{body}
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve the two pages, Swagger UI's start-up script and the bundled assets. The app is
    built with `docs_url=None, redoc_url=None`, so FastAPI's CDN-bound pages are not there."""
    folder = Path(fastapi_offline.__file__).parent / "static"
    parameters = {**swagger_ui_default_parameters, **(app.swagger_ui_parameters or {})}

    def page(title: str, root: str, head: str, body: str, csp: str) -> HTMLResponse:
        text = _PAGE.format(
            title=html.escape(f"{app.title} - {title}"),
            assets=root + ASSETS,
            head=head,
            body=body,
        )
        return HTMLResponse(text, headers={"Content-Security-Policy": csp})

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        head = f'<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">'
        body = (
            '<div id="swagger-ui"></div>\n'
            f'<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>\n'
            f'<script src="{root}{SWAGGER_INIT}"></script>'
        )
        return page("Swagger UI", root, head, body, SWAGGER_CSP)

    @app.get(SWAGGER_INIT, include_in_schema=False)
    async def swagger_init(request: Request) -> Response:
        options = {
            **parameters,
            "url": _root(request) + (app.openapi_url or "/openapi.json"),
            # Swagger UI would otherwise send the document to an online validator.
            "validatorUrl": None,
        }
        presets = "[SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]"
        script = (
            f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(options)}, "
            f"{{presets: {presets}}}));\n"
        )
        return Response(script, media_type=JS, headers=_asset_headers())

    @app.get(REDOC, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        spec = html.escape(root + (app.openapi_url or "/openapi.json"))
        body = (
            f'<redoc spec-url="{spec}"></redoc>\n'
            f'<script src="{root}{ASSETS}/redoc.standalone.js"></script>'
        )
        return page(
            "ReDoc", root, "<style>body { margin: 0; padding: 0; }</style>", body, REDOC_CSP
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = FILES.get(name)
        if media_type is None:
            raise NotFound("No such file")
        return FileResponse(folder / name, media_type=media_type, headers=_asset_headers())


def _root(request: Request) -> str:
    """The prefix a proxy serves the app under (ASGI `root_path`), as FastAPI's own pages use."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _asset_headers() -> dict[str, str]:
    # Revalidated on each load (by ETag, a 304): a new fastapi-offline release is seen at once.
    return {"Content-Security-Policy": ASSET_CSP, "Cache-Control": "no-cache"}
