"""Fetch one image with img2dataset's `download_image` and name why it failed.

img2dataset does the request and the opt-out (X-Robots-Tag) check; `safety` supplies the
opener it goes through. Failures come back as reject reason codes (see `Reason`).
"""
from __future__ import annotations

import random
import re
import time
from enum import Enum
from typing import Optional

from pipeline.ingest import import_img2dataset, safety


class Reason(str, Enum):
    """Reject reason codes of the ingest stage (rejects.reason)."""

    http_404 = "http_404"
    http_4xx = "http_4xx"
    http_429 = "http_429"
    http_5xx = "http_5xx"
    http_other = "http_other"
    timeout = "timeout"
    not_image = "not_image"
    decode_error = "decode_error"
    too_large = "too_large"
    too_small = "too_small"
    blocked_host = "blocked_host"
    bad_url = "bad_url"
    opt_out = "opt_out"
    dns_error = "dns_error"
    connection_error = "connection_error"
    tls_error = "tls_error"
    download_error = "download_error"


# Failures that another try may not repeat (load on the server, a dropped connection, rate
# limits): retried with backoff during the crawl, and re-crawled later by `--retry-transient`.
TRANSIENT_REASONS = frozenset({Reason.timeout, Reason.http_5xx, Reason.http_429, Reason.connection_error})


def backoff_seconds(attempt: int, base: float, cap: float = 30.0, rng: random.Random = random) -> float:
    """Full-jitter exponential backoff: uniform in [0.5, 1.5) x base x 2^attempt, at most `cap`."""
    return min(cap, base * (2 ** attempt)) * (0.5 + rng.random())


_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})")


def classify_download_error(message: str, refusal: Optional[safety.FetchRefused]) -> Reason:
    """Reason code for an error string returned by img2dataset's download_image."""
    if refusal is not None:
        return Reason(refusal.reason)
    if "X-Robots-Tag" in message:
        return Reason.opt_out
    if "Redirection to url" in message and "is not allowed" in message:  # urllib: redirect to file:// etc.
        return Reason.bad_url
    m = _HTTP_ERROR.search(message)
    if m:
        code = int(m.group(1))
        if code == 404:
            return Reason.http_404
        if code == 429:
            return Reason.http_429
        if 400 <= code < 500:
            return Reason.http_4xx
        if 500 <= code < 600:
            return Reason.http_5xx
        return Reason.http_other
    low = message.lower()
    if "timed out" in low or "timeout" in low:
        return Reason.timeout
    if "ssl" in low or "certificate" in low:
        return Reason.tls_error
    if "unknown url type" in low or "no host given" in low or ("redirect" in low and "not allowed" in low):
        return Reason.bad_url
    if "connection" in low or "refused" in low or "reset" in low or "remote end closed" in low:
        return Reason.connection_error
    return Reason.download_error


class Fetcher:
    """Callable: (index, url) -> (index, bytes | None, reason | None, detail | None).

    Thread-safe; each call gets its own total deadline of `timeout` seconds per attempt. A
    transient failure (TRANSIENT_REASONS) is tried again up to `retries` times, after a jittered
    exponential backoff starting at `retry_backoff` seconds; any other failure is final at once.
    """

    def __init__(self, *, timeout: float, retries: int, user_agent_token: Optional[str],
                 disallowed_header_directives: list[str], retry_backoff: float = 1.0):
        self._download = import_img2dataset("downloader").download_image
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        # Normalised as img2dataset's Downloader does before it calls download_image.
        self.user_agent_token = user_agent_token.strip().lower() if user_agent_token else None
        self.directives = {d.strip().lower() for d in disallowed_header_directives} or None

    def __call__(self, item: tuple[int, str]):
        index, url = item
        problem = safety.check_url(url)
        if problem:
            return index, None, Reason(problem[0]), problem[1]
        reason, detail = Reason.download_error, ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_seconds(attempt - 1, self.retry_backoff))
            safety.start_request(self.timeout)
            _, stream, error = self._download((index, url.strip()), self.timeout, self.user_agent_token,
                                              self.directives)
            if stream is not None:
                return index, stream.getvalue(), None, None
            refusal = safety.last_refusal()
            reason, detail = classify_download_error(error or "", refusal), error or ""
            if reason not in TRANSIENT_REASONS:
                break  # retrying cannot change the answer
        return index, None, reason, detail[:500]
