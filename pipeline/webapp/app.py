"""create_app(settings): the one FastAPI app `glide serve` runs.

Pages are static files shipped in static/ (read once, served from memory by name: no request path
reaches the filesystem); everything they show comes from the JSON API and is put on the page with
textContent. Every response carries a Content-Security-Policy that allows only this origin's own
scripts, styles and images (no inline script), so even markup that slipped into the page could not
run. JSON answers are never cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

import shards as sh
from pipeline.webapp import admin_routes, compare_routes, label_routes
from pipeline.webapp.context import AppContext, ServeSettings
from pipeline.webapp.sessions import set_signin_cookie

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI middleware: the headers above on every response; no-store on the API's JSON."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith("/api/")

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def load_static() -> dict[str, tuple[bytes, str]]:
    return {p.name: (p.read_bytes(), CONTENT_TYPES[p.suffix]) for p in sorted(STATIC.iterdir())
            if p.suffix in CONTENT_TYPES}


def create_app(settings: Optional[ServeSettings] = None, *, context: Optional[AppContext] = None) -> FastAPI:
    """The app over `settings` (or an opened `context`, which tests may share)."""
    context = context or AppContext.open(settings)
    app = FastAPI(title="glide", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.context = context
    static = load_static()

    def page(name: str) -> Response:
        data, media_type = static[name]
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def label_page() -> Response:
        return page("label.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> Response:
        return page("admin.html")

    @app.get("/compare", include_in_schema=False)
    def compare_page() -> Response:
        return page("compare.html")

    @app.get("/compare/admin", include_in_schema=False)
    def compare_admin_page() -> Response:
        return page("compare-admin.html")

    @app.get("/signin", include_in_schema=False)
    def signin_page() -> Response:
        response = page("signin.html")
        set_signin_cookie(response, context.settings.secure_cookies)
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(404, "not found")
        return page(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    @app.exception_handler(sh.UserError)
    async def user_error(_request: Request, e: sh.UserError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    app.include_router(label_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(compare_routes.router)
    app.add_middleware(SecurityHeaders)
    return app
