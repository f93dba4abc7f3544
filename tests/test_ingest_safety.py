"""Crawl safety: schemes, private hosts (also after redirects), byte cap, total time cap, opt-out."""
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pipeline.ingest import safety
from pipeline.ingest.fetch import Fetcher, Reason


def png_bytes(size=(8, 8)):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path
        if path == "/ok.png":
            return self._send(200, png_bytes(), {"Content-Type": "image/png"})
        if path == "/missing.png":
            return self._send(404, b"no", {})
        if path == "/error.png":
            return self._send(503, b"busy", {})
        if path == "/opt-out.png":
            return self._send(200, png_bytes(), {"X-Robots-Tag": "noimageai"})
        if path == "/opt-out-other-bot.png":
            return self._send(200, png_bytes(), {"X-Robots-Tag": "otherbot: noai"})
        if path == "/big-declared.bin":
            return self._send(200, b"x" * 5000, {})
        if path == "/big-undeclared.bin":  # no Content-Length: only counting while reading can stop it
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            return None
        if path == "/trickle.png":  # a byte every 0.1 s: no single read ever times out
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return None
        if path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", path[len("/redirect-to/"):])
            self.end_headers()
            return None
        return self._send(404, b"", {})

    def _send(self, status, body, headers):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url, *, allow_private=True, max_bytes=10_000, timeout=5.0):
    fetcher = Fetcher(timeout=timeout, retries=0, user_agent_token="glide-pipeline",
                      disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"])
    with safety.safe_opener(allow_private, max_bytes):
        _, data, reason, detail = fetcher((0, url))
    return data, reason, detail


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "javascript:alert(1)",
                                 "", "http://", "http://example.com:notaport/x.jpg", None])
def test_only_well_formed_http_and_https_urls_are_fetched(url):
    data, reason, _ = fetch(url)
    assert data is None and reason == Reason.bad_url


@pytest.mark.parametrize("ip,public", [("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False),
                                       ("169.254.169.254", False), ("::1", False), ("::ffff:127.0.0.1", False),
                                       ("0.0.0.0", False), ("100.64.0.1", False), ("fe80::1", False),
                                       ("240.0.0.1", False), ("8.8.8.8", True), ("2606:4700::1111", True)])
def test_public_address_classification(ip, public):
    assert safety.is_public_address(ip) is public


def test_loopback_host_is_refused_unless_private_networks_are_allowed(server):
    data, reason, detail = fetch(server + "/ok.png", allow_private=False)
    assert data is None and reason == Reason.blocked_host and "127.0.0.1" in detail
    data, reason, _ = fetch(server + "/ok.png", allow_private=True)
    assert reason is None and data == png_bytes()


def test_every_redirect_hop_is_checked_again(server, monkeypatch):
    # Pretend 127.0.0.1 is a public address: the first hop is allowed, the redirect to
    # another loopback address (never connected to) must be refused.
    real = safety.is_public_address
    monkeypatch.setattr(safety, "is_public_address", lambda ip: ip == "127.0.0.1" or real(ip))
    data, reason, _ = fetch(server + "/redirect-to/" + server + "/ok.png", allow_private=False)
    assert reason is None and data == png_bytes()
    port = server.rsplit(":", 1)[1]
    data, reason, detail = fetch(server + f"/redirect-to/http://127.0.0.2:{port}/ok.png", allow_private=False)
    assert data is None and reason == Reason.blocked_host and "127.0.0.2" in detail
    data, reason, _ = fetch(server + "/redirect-to/file:///etc/passwd", allow_private=True)
    assert data is None and reason == Reason.bad_url


def test_http_errors_and_opt_out_headers_become_reason_codes(server):
    assert fetch(server + "/missing.png")[1] == Reason.http_404
    assert fetch(server + "/error.png")[1] == Reason.http_5xx
    assert fetch(server + "/opt-out.png")[1] == Reason.opt_out
    # img2dataset's rule: a directive for another user agent does not apply to us.
    assert fetch(server + "/opt-out-other-bot.png")[1] is None


@pytest.mark.parametrize("path", ["/big-declared.bin", "/big-undeclared.bin"])
def test_byte_cap_stops_large_downloads(server, path):
    data, reason, detail = fetch(server + path, max_bytes=1000)
    assert data is None and reason == Reason.too_large and "1000" in detail
    assert fetch(server + path, max_bytes=10_000)[0] == b"x" * 5000


def test_the_safe_opener_is_only_in_force_inside_its_block(server):
    import urllib.request

    with safety.safe_opener(False, 1000):
        with pytest.raises(OSError, match="blocked_host"):
            urllib.request.urlopen(server + "/ok.png", timeout=5)
    with urllib.request.urlopen(server + "/ok.png", timeout=5) as r:  # the default opener again
        assert r.read() == png_bytes()


def test_total_time_cap_cuts_a_slow_trickle(server):
    start = time.monotonic()
    data, reason, _ = fetch(server + "/trickle.png", timeout=1.0)
    elapsed = time.monotonic() - start
    assert data is None and reason == Reason.timeout
    assert elapsed < 2.5, f"a 1 s total cap took {elapsed:.1f} s"
