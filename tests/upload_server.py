"""A tiny HTTP server on 127.0.0.1 that keeps what it receives, for upload tests.

Each POST's body is written to a file as it arrives, in small chunks (the server takes
no more memory than the client should), and answered with TikTok's OK envelope and a
``file_path``. Tests parse the kept body afterwards, with the standard library's MIME
parser, outside any memory measurement.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 64 * 1024


@dataclass
class Received:
    """One request: its path (with any query), headers and the file holding its body."""

    path: str
    headers: dict[str, str]
    body: Path

    def form(self) -> EmailMessage:
        """The body parsed as a MIME multipart message (its parts are the form's)."""
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        parser = email.parser.BytesParser(policy=email.policy.HTTP)
        message = parser.parsebytes(head + self.body.read_bytes())
        assert isinstance(message, EmailMessage)
        return message

    def parts(self) -> dict[str, tuple[str | None, bytes]]:
        """Form field -> (file name or None, its bytes)."""
        found: dict[str, tuple[str | None, bytes]] = {}
        for part in self.form().iter_parts():
            assert isinstance(part, EmailMessage)
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            assert isinstance(name, str) and isinstance(payload, bytes)
            found[name] = (part.get_filename(), payload)
        return found


@contextmanager
def upload_server(folder: Path) -> Iterator[tuple[str, list[Received]]]:
    """The server's base URL and the list it appends each request to."""
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = folder / f"body-{len(received)}"
            left = int(self.headers["Content-Length"])
            with body.open("wb") as out:
                while left:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        break
                    out.write(chunk)
                    left -= len(chunk)
            received.append(Received(self.path, dict(self.headers.items()), body))
            reply = json.dumps(
                {"code": 0, "message": "OK", "request_id": "r", "data": {"file_path": "up/1"}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads ``received``."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
