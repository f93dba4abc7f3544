"""HTTP server for a sample world, so the real crawler crawls it over loopback.

Routes (all GET or HEAD):
    /                      the world's index.html (a page for people)
    /images/<file>         the world's images; unknown names -> 404
    /redirect/<file>       302 to /images/<file> (exercises redirect following)
    /bad/not-image.jpg     200 text/html: a page where an image was expected
    /bad/truncated.jpg     200 image/jpeg: the first half of a JPEG
    /bad/oversized.png     200 image/png: ~50 KB file, header says oversized_side^2 pixels
    /bad/slow.jpg          a good JPEG after `slow_seconds` (cut short when the server stops)
    /bad/opt-out.jpg       a good JPEG with `X-Robots-Tag: noai, noimageai`
    anything else          404
`pipeline.sample_world.BAD_ROW_KINDS` lists the bad routes with the reject reason each should get.
"""
from __future__ import annotations

import functools
import os
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shards import UserError
from pipeline.sample_render import encode, render_scene
from pipeline.sample_world import derive_rng, make_scene, read_world

NOT_AN_IMAGE = (b"<!doctype html><html><head><title>Image moved</title></head><body>"
                b"<h1>This image is no longer available</h1><p>Try our gallery instead.</p></body></html>\n")
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".html": "text/html"}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=4)
def oversized_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels; 20000 px compresses to ~50 KB in ~0.2 s."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 256
    parts = [comp.compress(block) for _ in range(side // 256)]
    parts.append(comp.compress(row * (side % 256)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=4)
def good_extra_jpeg(seed: int, size: int) -> bytes:
    """A well-formed JPEG from the world's seed (served by the slow and opt-out routes)."""
    return encode(render_scene(make_scene(derive_rng(seed, "extra-image"), 2), size), "jpeg")


@functools.lru_cache(maxsize=4)
def truncated_jpeg(seed: int, size: int) -> bytes:
    """The first half of a busy JPEG: the header parses, decoding fails."""
    data = encode(render_scene(make_scene(derive_rng(seed, "truncated-image"), 4), max(size, 128)), "jpeg")
    return data[: len(data) // 2]


class _Handler(BaseHTTPRequestHandler):
    server: "_WorldHTTPServer"

    def log_message(self, format, *args):  # quiet: no per-request lines on stderr
        pass

    def do_HEAD(self):
        self._route(send_body=False)

    def do_GET(self):
        self._route(send_body=True)

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool, headers: dict = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _not_found(self, send_body: bool) -> None:
        self._send(404, b"not found\n", "text/plain", send_body)

    def _route(self, send_body: bool) -> None:
        srv = self.server
        path = unquote(urlsplit(self.path).path)
        head, _, name = path.lstrip("/").partition("/")
        if path == "/":
            index = srv.world_dir / "index.html"
            if index.is_file():
                return self._send(200, index.read_bytes(), "text/html; charset=utf-8", send_body)
            return self._not_found(send_body)
        if head in ("images", "redirect") and name and "/" not in name and not name.startswith("."):
            file = srv.world_dir / "images" / name
            if not file.is_file() or file.suffix not in CONTENT_TYPES:
                return self._not_found(send_body)
            if head == "redirect":
                return self._send(302, b"", "text/plain", send_body, {"Location": f"/images/{name}"})
            return self._send(200, file.read_bytes(), CONTENT_TYPES[file.suffix], send_body)
        if path == "/bad/not-image.jpg":
            return self._send(200, NOT_AN_IMAGE, "text/html; charset=utf-8", send_body)
        if path == "/bad/truncated.jpg":
            return self._send(200, truncated_jpeg(srv.seed, srv.image_size), "image/jpeg", send_body)
        if path == "/bad/oversized.png":
            return self._send(200, oversized_png(srv.oversized_side), "image/png", send_body)
        if path == "/bad/slow.jpg":
            if srv.stopping.wait(srv.slow_seconds):
                return  # server stopping: drop the connection unanswered
            return self._send(200, good_extra_jpeg(srv.seed, srv.image_size), "image/jpeg", send_body)
        if path == "/bad/opt-out.jpg":
            return self._send(200, good_extra_jpeg(srv.seed, srv.image_size), "image/jpeg", send_body,
                              {"X-Robots-Tag": "noai, noimageai"})
        return self._not_found(send_body)


class _WorldHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):  # clients that hang up are not our problem
        pass


class SampleWorldServer:
    """Serve a generated world on http://host:port in a background thread.

    with SampleWorldServer(world_dir) as server:
        urls = write_url_list(world_dir, server.base_url)
    """

    def __init__(self, world_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 slow_seconds: float = 15.0, oversized_side: int = 20000):
        self.world_dir = Path(world_dir)
        meta = read_world(self.world_dir)
        self.host, self.port = host, port
        self.slow_seconds = float(slow_seconds)
        self.oversized_side = int(oversized_side)
        self.seed = meta["config"]["seed"]
        self.image_size = meta["config"]["image_size"]
        self._httpd: _WorldHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("SampleWorldServer: not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "SampleWorldServer":
        if self._httpd is not None:
            return self
        oversized_png(self.oversized_side)  # build the cached bodies before the first request
        truncated_jpeg(self.seed, self.image_size)
        good_extra_jpeg(self.seed, self.image_size)
        try:
            httpd = _WorldHTTPServer((self.host, self.port), _Handler)
        except OSError as e:
            raise UserError(f"sample world server: cannot listen on {self.host}:{self.port} ({e.strerror})") \
                from None
        httpd.world_dir, httpd.seed, httpd.image_size = self.world_dir, self.seed, self.image_size
        httpd.slow_seconds, httpd.oversized_side = self.slow_seconds, self.oversized_side
        httpd.stopping = threading.Event()
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sample-world-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()  # ends slow responses now
        httpd.shutdown()
        httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "SampleWorldServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
