"""Serving the sandbox: a threaded HTTP/1.1 keep-alive server and a handle for tests.

The server is built on :class:`http.server.ThreadingHTTPServer` (one daemon thread per
connection, so an injected latency or a hanging request never blocks the others) with a small
WSGI gateway of its own, because it must be able to close a connection without answering
(:class:`~capi_destinations.sandbox.app.DropConnection`), which no WSGI server offers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from capi_destinations.sandbox.app import DropConnection, SandboxApp, scripted_answer

logger = logging.getLogger("capi_destinations.sandbox")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LISTEN_BACKLOG = 1024
# An idle keep-alive connection is closed after this many seconds; long enough that a pooled
# client connection is never closed under a test's feet.
IDLE_CONNECTION_SECONDS = 300


class _WSGIRequestHandler(BaseHTTPRequestHandler):
    """Runs one HTTP/1.1 request through the WSGI app, keeping the connection alive."""

    protocol_version = "HTTP/1.1"
    server: SandboxHTTPServer
    timeout = IDLE_CONNECTION_SECONDS

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY a small answer after a large request waits for a delayed ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track_connection(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.forget_connection(self.connection)

    def do_GET(self) -> None:
        self._run_app()

    def do_POST(self) -> None:
        self._run_app()

    def do_PUT(self) -> None:
        self._run_app()

    def do_DELETE(self) -> None:
        self._run_app()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the empty line.
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value
        return environ

    def _run_app(self) -> None:
        body = self._read_body()
        status_line: list[str] = []
        response_headers: list[tuple[str, str]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            status_line[:] = [status]
            response_headers[:] = headers

        try:
            chunks = self.server.app(self._environ(body), start_response)
            content = b"".join(chunks)
        except DropConnection:
            self._drop()
            return
        # One write for the head and the body: two small writes would meet Nagle's algorithm.
        head = [f"{self.request_version} {status_line[0]}"]
        head.extend(f"{name}: {value}" for name, value in response_headers)
        if self.close_connection:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head_bytes + content)
        except OSError:
            # The client gave up (a timeout) before the answer was ready.
            self.close_connection = True

    def _drop(self) -> None:
        """Close the socket at once with no answer (a reset, like a dying load balancer)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            # Linger 0 turns close() into a TCP reset instead of an orderly goodbye.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds only the path (tokens travel in bodies and headers), but a
        # client may put one in a query string: never log beyond the path.
        logger.debug("%s %s", self.command, self.path.partition("?")[0])


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server for one :class:`SandboxApp` that can close all its connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _WSGIRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request at debug level instead of printing a traceback."""
        # socketserver calls this inside its except block, so sys.exc_info() is the failure.
        logger.debug("sandbox request from %s failed", client_address, exc_info=sys.exc_info())

    def track_connection(self, connection: socket.socket) -> None:
        """Remember an open client connection so :meth:`close_connections` can end it."""
        with self._connections_lock:
            self._connections.add(connection)

    def forget_connection(self, connection: socket.socket) -> None:
        """Forget a connection that its handler has finished with."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open keep-alive connection so no handler thread outlives the server."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """A running sandbox: its ``url`` and Python-side control of the app behind it.

    The methods do what the ``/_sandbox/`` control API does, without a round trip.
    ``str(sandbox)`` is its URL, so ``f"{sandbox}/v26.0/…"`` works.
    """

    def __init__(self, app: SandboxApp, server: SandboxHTTPServer) -> None:
        self.app = app
        self.server = server
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<Sandbox {self.url}>"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"capi-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake requests waiting out a latency, close every connection."""
        self.server.shutdown()
        self.app.state.reset()
        self.server.close_connections()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- control ---------------------------------------------------------------------------

    def register_pixel(
        self,
        pixel_id: str,
        name: str | None = None,
        tokens: list[str] | tuple[str, ...] = (),
        app_secret: str = "",
        send_only_tokens: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Register a pixel and the tokens allowed on it (the sandbox stops being open).

        ``send_only_tokens`` may send events, but reading the pixel with them is refused.
        """
        self.app.state.register_pixel(
            pixel_id, name, tokens, app_secret, send_only_tokens=send_only_tokens
        )

    def revoke(self, token: str, reason: str = "revoked") -> None:
        """Make ``token`` fail with code 190 (``reason="expired"``: 190/463)."""
        self.app.state.revoke(token, reason)

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change fault settings (see :class:`~capi_destinations.sandbox.state.Faults`)."""
        return self.app.state.set_faults(**faults)

    def set_time_source(self, time_source: Any) -> None:
        """Use ``time_source()`` (Unix seconds) as the sandbox's clock."""
        self.app.state.set_time_source(time_source)

    def answer_next(self, **answer: Any) -> None:
        """Answer the next request(s) with a canned answer (see :func:`scripted_answer`)."""
        self.app.state.add_scripted_answer(scripted_answer(**answer))

    def answer_error(
        self,
        code: int,
        subcode: int | None = None,
        *,
        status: int = 400,
        message: str = "Scripted error",
        type: str = "OAuthException",
        is_transient: bool = False,
        times: int = 1,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """Answer the next request(s) with Meta's error body for ``code``/``subcode``."""
        error: dict[str, Any] = {
            "message": message,
            "type": type,
            "code": code,
            "is_transient": is_transient,
            **extra,
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        self.answer_next(status=status, error=error, times=times, headers=headers)

    def reset(self) -> None:
        """Back to an open sandbox with no faults, no hook and no recorded traffic."""
        self.app.before_answer = None
        self.app.state.reset()

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Received events; filters: pixel_id, event_id, event_name, test_event_code, test."""
        return self.app.state.events(**filters)

    def stats(self) -> dict[str, Any]:
        """Counts per pixel, totals, error codes and duplicates."""
        return self.app.state.stats()

    def requests(self) -> list[dict[str, Any]]:
        """The Graph requests as received, tokens redacted."""
        return self.app.state.requests()


def make_sandbox(
    host: str = DEFAULT_HOST, port: int = 0, *, app: SandboxApp | None = None, **faults: Any
) -> Sandbox:
    """Bind a sandbox server (port 0 picks a free port) without starting it."""
    app = app if app is not None else SandboxApp(**faults)
    return Sandbox(app, SandboxHTTPServer((host, port), app))


@contextlib.contextmanager
def running_sandbox(
    host: str = DEFAULT_HOST, port: int = 0, *, app: SandboxApp | None = None, **faults: Any
) -> Iterator[Sandbox]:
    """Start a sandbox on a free port in a background thread; stop it on exit.

    ``faults`` are initial fault settings, e.g. ``running_sandbox(latency_ms=200)``.
    """
    sandbox = make_sandbox(host, port, app=app, **faults).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
