"""Crawl safety: which URLs may be fetched, and a urllib opener that enforces it.

- only http and https;
- hosts resolving to private, loopback, link-local, multicast or reserved addresses are
  refused (unless allowed), checked when each connection is made, so every redirect hop
  is checked too, and the connection goes to the address that was checked (no DNS
  rebinding between check and connect);
- a byte cap per image (Content-Length first, then while reading);
- a total time cap per request: every socket operation gets at most the time left.

img2dataset's `download_image` calls `urllib.request.urlopen`; inside `safe_opener` that
goes through these rules (process-wide: a Ray worker runs one task at a time).
"""
from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Optional


class FetchRefused(OSError):
    """A request this crawler will not make or finish; `reason` is a reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_state = threading.local()  # per download thread: deadline and the reason of the last refusal


def start_request(timeout: float) -> None:
    """Begin a request in this thread: total deadline `timeout` seconds from now."""
    _state.deadline = time.monotonic() + timeout
    _state.refusal = None


def last_refusal() -> Optional[FetchRefused]:
    return getattr(_state, "refusal", None)


def _refuse(reason: str, detail: str) -> FetchRefused:
    err = FetchRefused(reason, detail)
    _state.refusal = err
    return err


def time_left() -> float:
    deadline = getattr(_state, "deadline", None)
    if deadline is None:
        return 60.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise _refuse("timeout", "total request time cap reached")
    return left


def is_public_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_reserved or addr.is_unspecified or not addr.is_global)


def check_url(url: str) -> Optional[tuple[str, str]]:
    """(reason, detail) if `url` must not be fetched before any network use, else None."""
    if not isinstance(url, str) or not url.strip():
        return "bad_url", "empty URL"
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # raises on a malformed port
    except ValueError as e:
        return "bad_url", str(e)
    if parts.scheme.lower() not in ("http", "https"):
        return "bad_url", f"scheme '{parts.scheme}' is not http or https"
    if not parts.hostname:
        return "bad_url", "no host"
    return None


def resolve_checked(host: str, port: int, allow_private: bool) -> list[tuple]:
    """getaddrinfo results for host, refusing the host if any address is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _refuse("dns_error", f"{host}: {e.strerror or e}") from None
    if not allow_private:
        for info in infos:
            ip = info[4][0]
            if not is_public_address(ip):
                raise _refuse("blocked_host", f"{host} resolves to non-public address {ip}")
    return infos


def _connect_pinned(host: str, port: int, allow_private: bool, source_address=None) -> socket.socket:
    """Connect to one of the addresses `resolve_checked` approved, within the time left."""
    last_error: Optional[OSError] = None
    for family, type_, proto, _, sockaddr in resolve_checked(host, port, allow_private):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(time_left())
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last_error = e
            if isinstance(e, FetchRefused):
                raise
    raise last_error or OSError(f"cannot connect to {host}")


class CappedResponse(http.client.HTTPResponse):
    """HTTPResponse whose reads stop at the byte cap and the request's deadline."""

    max_bytes = 20_000_000

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self._sock = sock
        self._received = 0

    def begin(self):
        self._sock.settimeout(time_left())
        super().begin()
        length = self.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > self.max_bytes:
            raise _refuse("too_large", f"Content-Length {int(length)} > {self.max_bytes} bytes")

    def read(self, amt=None):
        if amt is not None:
            return self._read_capped(amt)
        chunks = []
        while True:
            chunk = self._read_capped(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if self.length:  # the server hung up before Content-Length bytes
            raise http.client.IncompleteRead(data, self.length)
        return data

    def _read_capped(self, amt: int) -> bytes:
        if self.fp is None:  # body complete: http.client has already closed the socket
            return b""
        self._sock.settimeout(time_left())
        try:
            # read1: at most one socket read, so each wait is bounded by the time left
            # (read(amt) would loop over reads until amt bytes arrive).
            data = super().read1(amt)
        except socket.timeout:
            time_left()  # names the total cap when that is what ran out
            raise
        self._received += len(data)
        if self._received > self.max_bytes:
            raise _refuse("too_large", f"more than {self.max_bytes} bytes")
        return data


def _connection_classes(allow_private: bool, max_bytes: int):
    response = type("Response", (CappedResponse,), {"max_bytes": max_bytes})

    class CheckedHTTPConnection(http.client.HTTPConnection):
        response_class = response

        def connect(self):
            self.sock = _connect_pinned(self.host, self.port, allow_private, self.source_address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    class CheckedHTTPSConnection(http.client.HTTPSConnection):
        response_class = response

        def connect(self):
            sock = _connect_pinned(self.host, self.port, allow_private, self.source_address)
            # TLS to the pinned address, certificate checked against the URL's host name.
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    return CheckedHTTPConnection, CheckedHTTPSConnection


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        problem = check_url(newurl)
        if problem:
            raise _refuse(problem[0], f"redirect to {newurl}: {problem[1]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_safe_opener(allow_private: bool, max_bytes: int) -> urllib.request.OpenerDirector:
    """An opener for http/https only (no proxies, files, ftp or data URLs) with the checks above."""
    http_conn, https_conn = _connection_classes(allow_private, max_bytes)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_conn, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_conn, req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (HTTPHandler(), HTTPSHandler(), _RedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


@contextlib.contextmanager
def safe_opener(allow_private: bool, max_bytes: int):
    """Inside: `urllib.request.urlopen` (used by img2dataset) goes through the safe opener.
    The opener installed before is put back on exit."""
    previous = urllib.request._opener
    urllib.request.install_opener(build_safe_opener(allow_private, max_bytes))
    try:
        yield
    finally:
        urllib.request._opener = previous
