"""Start the server: the bind policy (loopback by default, a token for any other address) and uvicorn."""

import ipaddress
import logging
import os
import socket

from fer.serve.app import create_app
from fer.serve.engine import Engine

log = logging.getLogger(__name__)

TOKEN_ENV = "FER_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16  # e.g. python -c "import secrets; print(secrets.token_urlsafe())" gives 43 characters


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require (the argument, else env FER_SERVE_TOKEN, else none). ValueError for a non-loopback host
    without one, or a token shorter than MIN_TOKEN_LENGTH."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the token must have at least {MIN_TOKEN_LENGTH} characters, got {len(token)} (make one "
                         "with: python -c \"import secrets; print(secrets.token_urlsafe())\")")
    if token is None and not is_loopback(host):
        raise ValueError(f"binding {host} opens the server to other machines: give a token (--token or env "
                         f"{TOKEN_ENV}), or bind 127.0.0.1 and put a reverse proxy in front (docs/serving.md)")
    return token


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 takes a free one (read it back with sock.getsockname()[1])."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(engine: Engine, host: str = "127.0.0.1", token: str | None = None, *,
                max_body_bytes: int = 10 * 2**20, log_level: str = "warning", **app_options):
    """A uvicorn.Server for the app around `engine`; call .run(sockets=[bind_socket(host, port)])."""
    import uvicorn

    token = resolve_token(host, token)
    app = create_app(engine, token=token, max_body_bytes=max_body_bytes, **app_options)
    # ws_max_size: frames up to twice the limit reach the app, which answers them with an error and keeps the
    # connection; beyond that the WebSocket protocol layer closes it (1009).
    config = uvicorn.Config(app, log_level=log_level, ws_max_size=2 * max_body_bytes, access_log=False,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, **options) -> None:
    """Serve until Ctrl+C (blocking)."""
    token = resolve_token(host, token)
    server = make_server(engine, host, token, **options)
    sock = bind_socket(host, port)
    log.info("serving on http://%s:%d (page /, API docs /docs)%s", host, sock.getsockname()[1],
             ", token required" if token else "")
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()


class BackgroundServer:
    """The server in a background thread of this process (tests, notebooks): `with BackgroundServer(engine) as s:`
    then s.url. port 0 takes a free port. Leaving the block stops the server; the engine stays open."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 0, token: str | None = None, **options):
        import threading

        self.server = make_server(engine, host, token, **options)
        self.socket = bind_socket(host, port)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True,
                                       name="fer-server")

    def __enter__(self) -> "BackgroundServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30.0
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)
        self.socket.close()
