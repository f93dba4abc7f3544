"""The web app's address as raters reach it, and the sign-in links the admin commands print.

A link carries the token in its #fragment: browsers never send a fragment to the server, so the token
stays out of access logs, proxies and Referer headers; the sign-in page posts it once and drops it
from the address bar.
"""
from __future__ import annotations


def base_url(serve, port: int | None = None) -> str:
    """serve.url, else http://HOST:PORT of the config's serve section (`port`: the one actually bound)."""
    if serve.url:
        return serve.url.rstrip("/")
    host = serve.host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    elif host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port if port is not None else serve.port}"


def signin_link(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/signin#token={token}"
