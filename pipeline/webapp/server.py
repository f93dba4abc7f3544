"""Run the app: bind the socket first (so `--port 0` can print the port it got), print the links, serve."""
from __future__ import annotations

import socket
import sys

from pipeline.webapp.context import AppContext, ServeSettings
from pipeline.webapp.links import signin_link


def bind(host: str, port: int) -> socket.socket:
    from shards import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP. Without it
    # a reply written as headers then body waits for the client's delayed ACK: 40 ms on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: ServeSettings, *, host: str, port: int, base_url, admin: bool, stream=None) -> int:
    """Serve until interrupted. `base_url(port)` gives the address links name (the bound port passed in)."""
    import uvicorn

    from pipeline.webapp.app import create_app

    stream = stream or sys.stdout
    context = AppContext.open(settings)  # opens (creates, migrates) the database before anything listens
    app = create_app(context=context)
    sock = bind(host, port)
    base = base_url(sock.getsockname()[1])
    if admin:
        token = context.store.add_rater("admin", admin=True)
        print(f"admin: {signin_link(base, token)}", file=stream)
    if host not in ("127.0.0.1", "::1", "localhost") and not base.startswith("https://"):
        print(f"note: listening on {host}, so other machines can reach it; put it behind https and give "
              f"--url https://... so sign-in cookies are sent only over TLS", file=stream)
    print(f"serving on {base} (labels in {context.store.name}); raters sign in with the link "
          f"`glide label raters add NAME` prints; Ctrl-C stops", file=stream, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30,
                            server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        context.store.close()
    return 0
