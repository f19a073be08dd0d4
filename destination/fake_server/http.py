"""The fake TikTok over real HTTP, on the standard library's ``ThreadingHTTPServer``.

``/open_api/v1.3/<path>`` plus query string, headers and JSON body become an
``ApiRequest`` for ``FakeTikTok.send``; a multipart/form-data body (a customer file
upload) becomes its ``params`` (the plain fields, after the query's) and ``files`` (each
file part spooled to a temporary file, deleted once answered). Its ``ApiResponse`` is
written back as JSON (or as an HTML page for a scripted non-JSON failure).
``/portal/auth`` is the consent page (GET shows it, POST takes the Approve / Deny form and
redirects). Anything else is a 404.
Connections are kept alive (HTTP/1.1), as TikTok's are.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server.faults import FakeConnectionDrop
from destination.fake_server.multipart import Form, MultipartError, boundary_of, read_form
from destination.fake_server.portal import PortalReply
from destination.fake_server.state import FakeTikTok
from destination.gc_tuning import few_collections
from destination.serving import BackgroundServer
from destination.tiktok.api import API_VERSION

__all__ = ["RunningServer", "serve_forever", "serve_in_thread"]

_PREFIX = f"/open_api/{API_VERSION}/"
_PORTAL = "/portal/auth"
_MAX_BODY = 64 * 1024 * 1024
_MAX_UPLOAD = 1024 * 1024 * 1024  # a multipart body: spooled to disk, not held in memory


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeTikTok) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    # Connections are kept alive (HTTP/1.1), so closing the server closes them too:
    # a client must not be answered by a server that was stopped.

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._connections_lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):  # closed meanwhile
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-request is not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with keep-alive, as TikTok's API: a client's pooled connections are reused
    # (an idle one is closed after ``timeout`` seconds; stopping the server closes all).
    protocol_version = "HTTP/1.1"
    timeout = 30
    # headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm holds
    # the second until the client acknowledges the first, which it delays (up to 40 ms)
    disable_nagle_algorithm = True
    server_version = "FakeTikTok/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default one-line-per-request log on stderr."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        boundary = boundary_of(self.headers.get("Content-Type") or "")
        if not 0 <= length <= (_MAX_BODY if boundary is None else _MAX_UPLOAD):
            self.close_connection = True  # the body was not read: nothing after it can be
            self._write_envelope(400, 40000, "invalid Content-Length")
            return
        if boundary is not None:
            try:
                form = read_form(self.rfile, length, boundary)
            except MultipartError as exc:
                self.close_connection = True  # the body may be partly unread
                self._write_envelope(400, 40002, f"invalid multipart/form-data body: {exc}")
                return
            try:
                self._api(b"", form)
            finally:
                form.remove()
            return
        raw = self.rfile.read(length) if length else b""
        self._api(raw, None)

    def _api(self, raw: bytes, form: Form | None) -> None:
        """Answer a request whose body was read: ``raw`` JSON, or a multipart ``form``."""
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") == _PORTAL and self.command in ("GET", "POST"):
            self._portal(parts.query, raw)
            return
        if not parts.path.startswith(_PREFIX):
            self._write_envelope(404, 40000, "path not found")
            return

        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:  # stricter: let the standard library judge
                text = raw.decode("utf-8", errors="replace")
                try:
                    body = json.loads(text)
                except ValueError:
                    body = text  # the fake answers 40002 "Invalid JSON body"
        params = {
            name: values[0]
            for name, values in parse_qs(parts.query, keep_blank_values=True).items()
        }
        if form is not None:
            params.update(form.fields)
        request = ApiRequest(
            method=self.command,
            path=unquote(parts.path[len(_PREFIX) :]),
            params=params,
            json=body,
            headers=dict(self.headers.items()),
            files={} if form is None else form.files,
        )
        server: _Server = self.server  # type: ignore[assignment]
        try:
            response = server.fake.receive(request)  # parsed here: no one else holds it
        except FakeConnectionDrop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # closed with no reply
            return
        except Exception:
            self._write_envelope(500, 50000, "internal error in the fake TikTok server")
            return
        self._write(response)

    def _portal(self, query: str, raw: bytes) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        if self.command == "GET":
            reply = server.fake.consent_page(_first_values(query))
        else:
            reply = server.fake.consent_decision(_first_values(raw.decode("utf-8", "replace")))
        self._write_portal(reply)

    def _write_portal(self, reply: PortalReply) -> None:
        payload = reply.html.encode("utf-8")
        self.send_response(reply.status)
        if reply.location is not None:
            self.send_header("Location", reply.location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def _write_envelope(self, status: int, code: int, message: str) -> None:
        body = {"code": code, "message": message, "request_id": "", "data": {}}
        self._write(ApiResponse(status=status, body=body))

    def _write(self, response: ApiResponse) -> None:
        if response.body is None:
            payload = response.text.encode("utf-8")
            content_type = "text/html; charset=utf-8"
        else:
            payload = orjson.dumps(response.body)
            content_type = "application/json"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")  # the client must not send more on it
        self.end_headers()
        self.wfile.write(payload)


def _first_values(query: str) -> dict[str, str]:
    """A query string or form body as a dict, the first value of each name."""
    return {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}


def _make_server(fake: FakeTikTok, host: str, port: int) -> _Server:
    server_class = _Server6 if ":" in host else _Server
    return server_class((host, port), fake)


def _base_url(server: _Server) -> str:
    host, port = server.server_address[:2]
    if not isinstance(host, str):
        host = host.decode()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class RunningServer(BackgroundServer):
    """A fake TikTok HTTP server running in a background thread.

    ``base_url`` is what to give ``HttpBackend``. ``stop()`` (or leaving the ``with``
    block) shuts it down and frees the port; stopping twice is harmless.
    """

    def __init__(self, server: _Server) -> None:
        self.base_url: str = _base_url(server)
        super().__init__(server, name=f"fake-tiktok-{self.base_url}")

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"RunningServer({self.base_url!r}, {state})"


def serve_in_thread(fake: FakeTikTok, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start serving ``fake`` in a daemon thread; ``port`` 0 picks a free port."""
    return RunningServer(_make_server(fake, host, port))


def serve_forever(
    fake: FakeTikTok,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``fake`` until Ctrl-C (then return normally).

    ``on_ready`` is called with the base URL once the socket is bound (useful with
    ``port=0``, or to print where the server listens). The garbage collector runs seldom
    meanwhile (``gc_tuning``): every request's body is thousands of containers.
    """
    server = _make_server(fake, host, port)
    try:
        if on_ready is not None:
            on_ready(_base_url(server))
        with few_collections():
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
