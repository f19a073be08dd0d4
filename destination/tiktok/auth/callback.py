"""The one-shot loopback server that receives TikTok's redirect after the consent page.

``CallbackServer`` listens on ``127.0.0.1`` (a free port with ``port=0``) from the moment
it is created; ``redirect_uri`` is ``http://127.0.0.1:<port>/callback``. The first request
to ``/callback`` decides the login: it must carry the ``state`` this login sent (compared
in constant time), and then either an ``auth_code`` or an ``error`` (the user pressed
Deny). The browser gets a short page saying what happened; ``wait`` returns the code or
raises ``AuthenticationError`` with the same message. Other paths (``/favicon.ico``)
get a 404 and change nothing; requests after the first get a "finished" page. Nothing
is logged: the query holds the authorization code.
"""

from __future__ import annotations

import hmac
import queue
import threading
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from destination.errors import AuthenticationError, ConfigurationError
from destination.serving import BackgroundServer

__all__ = ["CALLBACK_PATH", "CallbackServer"]

CALLBACK_PATH = "/callback"
_RETRY = "nothing was stored; run `tiktok-audiences auth login` again"


@dataclass(frozen=True)
class _Outcome:
    auth_code: str | None  # set when the authorization was granted
    message: str  # what went wrong, or a confirmation


def judge(query: str, expected_state: str) -> _Outcome:
    """What a callback query means for the login that sent ``expected_state``."""
    params = {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode(), expected_state.encode()):
        return _Outcome(
            None,
            "the authorization reply does not belong to this login (its state does not "
            f"match: a forged or stale link); {_RETRY}",
        )
    error = params.get("error")
    if error is not None:
        reason = "you pressed Deny" if error == "access_denied" else f"TikTok said {error!r}"
        return _Outcome(
            None, f"authorization was denied in TikTok's consent page ({reason}); {_RETRY}"
        )
    code = params.get("auth_code") or params.get("code")
    if not code:
        return _Outcome(None, f"TikTok's redirect carried no auth_code; {_RETRY}")
    return _Outcome(code, "authorization received")


class _Server(HTTPServer):
    def __init__(self, address: tuple[str, int], expected_state: str) -> None:
        self.expected_state = expected_state
        self.outcomes: queue.Queue[_Outcome] = queue.Queue()
        self.finished = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser hanging up is not worth a traceback (which could show the query)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "tiktok-audiences-login"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the default log line would show the authorization code."""

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self._page(404, "Not found", "This is the tiktok-audiences login callback.")
            return
        if server.finished.is_set():
            self._page(409, "Login finished", "This login has already finished.")
            return
        server.finished.set()
        outcome = judge(parts.query, server.expected_state)
        if outcome.auth_code is not None:
            self._page(
                200,
                "Authorization received",
                "tiktok-audiences received the authorization. You can close this window "
                "and return to the terminal.",
            )
        else:
            text = outcome.message[:1].upper() + outcome.message[1:]
            self._page(400, "Authorization failed", text)
        server.outcomes.put(outcome)

    def _page(self, status: int, title: str, text: str) -> None:
        html = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>"
            f"<p id='message'>{escape(text)}</p></body></html>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(html)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(html)


class CallbackServer(BackgroundServer):
    """Serves ``/callback`` on loopback in a background thread until closed."""

    def __init__(self, expected_state: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._callback = _Server((host, port), expected_state)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} for TikTok's redirect: {exc.strerror} "
                "(choose another --port)"
            ) from exc
        super().__init__(self._callback, name="tiktok-audiences-login-callback")
        self.redirect_uri = f"http://{host}:{self.port}{CALLBACK_PATH}"

    def __repr__(self) -> str:
        return f"CallbackServer({self.redirect_uri!r})"

    def wait(self, timeout: float) -> str:
        """The authorization code, once the redirect arrived; else AuthenticationError."""
        try:
            outcome = self._callback.outcomes.get(timeout=timeout)
        except queue.Empty:
            raise AuthenticationError(
                f"no answer from TikTok's consent page within {timeout:g} seconds; {_RETRY}"
            ) from None
        if outcome.auth_code is None:
            raise AuthenticationError(outcome.message)
        return outcome.auth_code

    close = BackgroundServer.stop
