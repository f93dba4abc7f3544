"""Who is asking, and whether a POST really comes from our own page.

Sign-in: a rater opens the link `glide label raters add` printed (/signin#token=...). The sign-in page
posts the token; the server checks it against the stored sha256 and sets it as an HttpOnly,
SameSite=Strict cookie, so page scripts cannot read it and other sites' requests do not carry it. Every
request looks the token up again: a revoked rater is out at their next keypress.

Cross-site request forgery: every POST must carry
  - `X-CSRF-Token`: HMAC-SHA256 of the session token (the page gets it from /api/me; another site can
    neither read that nor compute it). It does not depend on anything the server keeps in memory, so a
    page open across a server restart goes on saving. The sign-in POST, before there is a session,
    double-submits a random cookie instead;
  - `Content-Type: application/json` (a cross-site form cannot send it without a CORS preflight, which
    this app never grants);
  - no foreign `Origin` and no cross-site `Sec-Fetch-Site`.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response

from filtering.labels.raters import Rater

SESSION_COOKIE = "glide_session"
SIGNIN_COOKIE = "glide_signin"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE_S = 90 * 24 * 3600


@dataclass(frozen=True)
class Session:
    rater: Rater
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode("utf-8"), b"glide-csrf-v1", hashlib.sha256).hexdigest()


def context(request: Request):
    return request.app.state.context


async def optional_session(request: Request) -> Optional[Session]:
    # async: an indexed read in WAL mode never waits for a writer, and a thread hop per dependency
    # cost more than the read itself
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 256:
        return None
    rater = context(request).store.authenticate(token)
    return Session(rater, token) if rater is not None else None


async def signed_in(session: Optional[Session] = Depends(optional_session)) -> Session:
    if session is None:
        raise HTTPException(401, "not signed in: open your sign-in link again")
    return session


async def admin(session: Session = Depends(signed_in)) -> Session:
    if not session.rater.is_admin:
        raise HTTPException(403, "this needs the admin link (glide serve --admin prints it)")
    return session


async def check_same_origin_json(request: Request) -> None:
    """The parts of the CSRF check that need no session (see the module doc)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "POST bodies are JSON (Content-Type: application/json)")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise HTTPException(403, "cross-site request refused (foreign Origin)")
    elif origin == "null":
        raise HTTPException(403, "cross-site request refused (opaque Origin)")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(403, "cross-site request refused (Sec-Fetch-Site)")


async def posted(request: Request, session: Session = Depends(signed_in)) -> Session:
    """A signed-in rater's POST from our own page (the CSRF token matches their session)."""
    await check_same_origin_json(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return session


async def posted_by_admin(session: Session = Depends(posted)) -> Session:
    return await admin(session)


async def check_signin_post(request: Request) -> None:
    """The sign-in POST: same-origin JSON, and the double-submitted cookie the sign-in page set."""
    await check_same_origin_json(request)
    cookie, sent = request.cookies.get(SIGNIN_COOKIE, ""), request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode("utf-8", "replace"), sent.encode("utf-8", "replace")):
        raise HTTPException(403, "missing or wrong sign-in CSRF token: open your link again")


def set_signin_cookie(response: Response, secure: bool) -> None:
    # readable by the sign-in page's script, which sends it back as the header (double submit)
    response.set_cookie(SIGNIN_COOKIE, secrets.token_urlsafe(24), max_age=600, path="/", secure=secure,
                        httponly=False, samesite="strict")


def set_session_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE_S, path="/", secure=secure, httponly=True,
                        samesite="strict")
    response.delete_cookie(SIGNIN_COOKIE, path="/")
