"""The backend interface: one method, ``send(request) -> response``.

``HttpBackend`` speaks HTTP to TikTok (or anything at another base URL); the fake TikTok
server's ``FakeTikTok`` is another implementation that answers in-process. Tests choose
one by passing it in.

Paths are relative to the backend's ``root`` under the base URL: TikTok's client
(``tiktok.api.tiktok_backend``) sends ``segment/mapping/`` to
``{base_url}/open_api/v1.3/segment/mapping/``. ``check_url`` refuses URLs that parsers
read differently and rebuilds the rest from their parts; plain http goes to loopback only.

Credentials travel in headers and JSON bodies, except the app secret of
``oauth2/advertiser/get/``, which TikTok takes in the query string; so request reprs,
transport errors and urllib3's debug log lines show such query values as ``***``.

A request with ``files`` (a customer file upload) is sent as multipart/form-data, its
``params`` as the form's other fields; ``MultipartBody`` streams the files from disk in
chunks, so an upload takes the same memory whatever the file's size.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from destination.errors import ConfigurationError, PermanentError, RetryableError

__all__ = [
    "ApiRequest",
    "ApiResponse",
    "Backend",
    "DryRunBackend",
    "HttpBackend",
    "MultipartBody",
    "check_base_url",
    "check_url",
    "redact_url",
]

REDACTED = "***"
_SECRET_HEADERS = frozenset({"access-token", "authorization"})
_SECRET_PARAMS = frozenset({"secret", "access_token", "refresh_token", "auth_code"})
_SECRET_IN_QUERY = re.compile(
    r"\b(" + "|".join(sorted(_SECRET_PARAMS)) + r")=[^&\s\"')]*", re.IGNORECASE
)

log = logging.getLogger(__name__)


def redact_query(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``***``."""
    return _SECRET_IN_QUERY.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class _RedactQueryFilter(logging.Filter):
    """Masks credential query values in urllib3's "GET /path?query" debug lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_query(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_TRANSPORT_LOG_FILTER = _RedactQueryFilter()


def _guard_transport_log() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if _TRANSPORT_LOG_FILTER not in logger.filters:
        logger.addFilter(_TRANSPORT_LOG_FILTER)


@dataclass(frozen=True)
class ApiRequest:
    """One call to the API. ``params`` are query parameters (already strings).

    ``files`` (form field -> (file name, path on disk)) makes the request a multipart
    form: the files are its file parts and ``params`` its other fields, not a query. A
    request carries a JSON body or files, never both.
    """

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, tuple[str, Path]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.files and self.json is not None:
            raise ValueError("a request carries a JSON body or files, not both")

    def __repr__(self) -> str:
        shown = {
            k: (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()
        }
        params = {
            k: (REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in self.params.items()
        }
        shown_files = {k: name for k, (name, _) in self.files.items()}
        files = f", files={shown_files!r}" if shown_files else ""
        return f"ApiRequest({self.method} {self.path}, params={params!r}, headers={shown!r}{files})"

    def secrets(self) -> list[str]:
        """The credentials this request carries: secret headers, query values, body fields."""
        found = [v for k, v in self.headers.items() if k.lower() in _SECRET_HEADERS]
        found += [v for k, v in self.params.items() if k.lower() in _SECRET_PARAMS]
        if isinstance(self.json, dict):
            found += [v for k, v in self.json.items() if k in _SECRET_PARAMS and isinstance(v, str)]
        return [v for v in found if v]

    def redact(self, text: str) -> str:
        """``text`` (an error from the HTTP stack) without this request's credentials,
        however it writes them: as they are, escaped as in a repr or JSON, or
        percent-encoded, and without any credential query value."""
        for secret in self.secrets():
            for form in _written_forms(secret):
                text = text.replace(form, REDACTED)
        return redact_query(text)


def _written_forms(secret: str) -> list[str]:
    """The ways an error message may spell ``secret``, longest first."""
    forms = {
        secret,
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
    }
    return sorted(forms, key=len, reverse=True)


@dataclass(frozen=True)
class ApiResponse:
    """What came back: the HTTP status and the decoded JSON body (None if not JSON)."""

    status: int
    body: Any = None
    text: str = ""


class Backend(Protocol):
    """Anything that can carry an ``ApiRequest`` to TikTok and bring the answer back."""

    def send(self, request: ApiRequest) -> ApiResponse: ...


def check_base_url(base_url: str) -> str:
    """The API root rebuilt as ``scheme://host[:port]`` (see ``check_url``); a path other
    than ``/`` is refused, as ``/open_api/v1.3/`` is added to the root."""
    return check_url(base_url, name="base_url", path=False)


def check_url(url: str, *, name: str, path: bool) -> str:
    """``url`` rebuilt from its checked scheme, host, port (and ``path`` if allowed).

    Parsers disagree on odd URLs: ``urlsplit`` reads ``http://evil.example\\@127.0.0.1``
    as loopback while urllib3, which ``requests`` connects with, reads ``evil.example``.
    So the URL is parsed once, by urllib3's ``parse_url``, and whatever another parser
    might read differently is refused, not dropped: whitespace and control characters,
    non-ASCII, backslashes, user info, queries, fragments, odd hosts, ports outside
    1-65535. Callers use only the rebuilt string, so no other reading of ``url`` matters.
    Plain http is allowed to loopback only; messages name ``name`` and show the URL with
    any user info as ``***``.
    """
    problem = _url_problem(url, path=path)
    if problem is not None:
        raise ConfigurationError(f"{name} {redact_url(url)!r} {problem}")
    parts = parse_url(url)
    port = "" if parts.port is None else f":{parts.port}"
    kept = (parts.path or "") if path else ""
    return f"{parts.scheme}://{parts.host}{port}{kept}"


def _url_problem(url: str, *, path: bool) -> str | None:
    """What makes ``url`` unsafe to use, or None."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains whitespace or a control character"
    if not url.isascii():
        return "contains non-ASCII characters (write a host name in its xn-- form)"
    if "\\" in url:
        return "contains a backslash"
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "is not a valid URL (check the host and the port, 1 to 65535)"
    authority = _AUTHORITY.match(url)
    if parts.scheme not in ("http", "https") or authority is None:
        return "must be an http(s) URL such as https://business-api.tiktok.com"
    if "@" in authority.group(1):
        return "must not hold a user name or password"
    if parts.query is not None:
        return "must not have a query string (?...)"
    if parts.fragment is not None:
        return "must not have a fragment (#...)"
    if not path and parts.path not in (None, "", "/"):
        return (
            "must not have a path: it is the API root, such as "
            "https://business-api.tiktok.com (/open_api/v1.3/ is added to it)"
        )
    host = parts.host or ""
    if not host:
        return "has no host"
    if not _valid_host(host, authority.group(1)):
        return "has an invalid host"
    if parts.port == 0:
        return "has port 0 (a port is 1 to 65535)"
    if parts.scheme == "http" and not _is_loopback(host):
        return (
            "is plain http to a non-loopback host; use https "
            "(plain http is only allowed for 127.0.0.0/8, ::1 and localhost)"
        )
    return None


# "scheme://authority": the authority ends where urllib3's (and RFC 3986's) ends
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_AUTHORITY_CHARACTERS = re.compile(r"[A-Za-z0-9._:\[\]-]*")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _valid_host(host: str, authority: str) -> bool:
    """An IP address or a DNS name, written plainly (no percent escapes, no IPv6 zone).

    A name whose last label is a number is read as IPv4 by browsers (``0x7f.1`` is
    127.0.0.1), so it must then be a dotted-quad address.
    """
    if not _AUTHORITY_CHARACTERS.fullmatch(authority):
        return False
    if host.startswith("["):
        return _is_ip(host[1:-1])
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return _is_ip(host)
    return all(_LABEL.fullmatch(label) for label in labels)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def redact_url(url: str) -> str:
    """``url`` with anything that may be user info (from ``://`` to the last ``@``) shown
    as ``***``, and credential query values masked: for messages and logs."""
    if "@" in url:
        start = url.find("://") + 3 if "://" in url else 0
        url = f"{url[:start]}{REDACTED}@{url[url.rfind('@') + 1 :]}"
    return redact_query(url)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_CHUNK_SIZE = 64 * 1024  # what a file part is read in: the memory an upload takes


class MultipartBody:
    """A multipart/form-data body (RFC 7578) whose files are read from disk as it is sent.

    ``len()`` is the body's exact size, so ``requests`` sends a ``Content-Length`` (not a
    chunked body, which some servers refuse for uploads); iterating yields the fields,
    then each file's head, its bytes in chunks of ``_CHUNK_SIZE`` and its tail. Each file
    is opened when its turn comes and closed after it. A body is iterated once: a retry
    builds a new one. ``file_error`` says why a file could not be sent (it changed size,
    or reading it failed): ``requests`` reports that as a dropped connection.
    """

    def __init__(self, fields: Mapping[str, str], files: Mapping[str, tuple[str, Path]]) -> None:
        """Raises ``OSError`` if a file cannot be read (``stat``): before anything is sent."""
        self.boundary = secrets.token_hex(16)
        self._parts: list[bytes | tuple[Path, int]] = []
        for name, value in fields.items():
            self._parts.append(self._head(name) + b"\r\n" + value.encode("utf-8") + b"\r\n")
        for name, (filename, path) in files.items():
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            head = self._head(name, filename) + f"Content-Type: {content_type}\r\n\r\n".encode()
            self._parts += [head, (path, path.stat().st_size), b"\r\n"]
        self._parts.append(f"--{self.boundary}--\r\n".encode("ascii"))
        self._length = sum(len(p) if isinstance(p, bytes) else p[1] for p in self._parts)
        self.file_error: str | None = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            try:
                yield from _file_chunks(*part)
            except OSError as exc:
                self.file_error = exc.strerror or str(exc)
                raise

    def _head(self, name: str, filename: str | None = None) -> bytes:
        """A part's boundary line and Content-Disposition (names quoted as browsers do)."""
        disposition = f'form-data; name="{_quoted(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quoted(filename)}"'
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n".encode()


def _quoted(text: str) -> str:
    """A name inside a quoted header value, escaped as the HTML form algorithm does."""
    return text.replace("\n", "%0A").replace("\r", "%0D").replace('"', "%22")


def _file_chunks(path: Path, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``path`` in chunks; ``OSError`` if it has changed size since."""
    with path.open("rb") as handle:
        left = size
        while left:
            chunk = handle.read(min(_CHUNK_SIZE, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        if left or handle.read(1):
            raise OSError(f"{path.name} changed size while it was being sent")


# Failures of the connection itself: the same request may well succeed later.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class HttpBackend:
    """Sends requests over HTTP with a pooled ``requests.Session``.

    ``base_url`` is kept only as ``check_base_url`` rebuilt it, and every request goes to
    that string, the API's ``root`` (such as ``open_api/v1.3``) and the path. Transport
    failures (timeouts, resets, refused connections)
    become ``RetryableError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        root: str = "",
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self._prefix = (
            f"{self.base_url}/{root.strip('/')}/" if root.strip("/") else self.base_url + "/"
        )
        self.timeout = timeout
        self._session = session or requests.Session()
        _guard_transport_log()

    def __repr__(self) -> str:
        return f"HttpBackend({self.base_url!r})"

    def url_for(self, path: str) -> str:
        return self._prefix + path.lstrip("/")

    def send(self, request: ApiRequest) -> ApiResponse:
        headers = dict(request.headers)
        payload: bytes | MultipartBody | None = None
        params = dict(request.params) or None
        if request.json is not None:  # orjson: a 1,000-user body encodes ~5x faster
            payload = orjson.dumps(request.json)
            headers["Content-Type"] = "application/json"
        elif request.files:
            try:
                payload = MultipartBody(request.params, request.files)
            except OSError as exc:
                raise PermanentError(
                    f"{request.method} {request.path}: cannot read the file to upload "
                    f"({exc.strerror or type(exc).__name__})"
                ) from None
            headers["Content-Type"] = payload.content_type
            params = None  # the form's fields
        try:
            reply = self._session.request(
                request.method,
                self.url_for(request.path),
                params=params,
                data=payload,
                headers=headers,
                timeout=self.timeout,
            )
        except _TRANSIENT as exc:
            if isinstance(payload, MultipartBody) and payload.file_error is not None:
                # not the connection: the same file would fail again, or be sent changed
                # under the signature of the file as it was
                raise PermanentError(
                    f"{request.method} {request.path}: cannot send the file to upload "
                    f"({payload.file_error})"
                ) from None
            # The exception text holds the URL (a query can hold the app secret): name the
            # class only, log the text redacted, and do not chain it into tracebacks.
            log.debug("%s %s: %s", request.method, request.path, request.redact(str(exc)))
            raise RetryableError(
                f"{request.method} {request.path} failed in transport: {type(exc).__name__}"
            ) from None
        except requests.RequestException as exc:
            log.debug("%s %s: %s", request.method, request.path, request.redact(str(exc)))
            raise PermanentError(
                f"{request.method} {request.path} cannot be sent: {type(exc).__name__}"
            ) from None
        try:
            body = reply.json()
        except (ValueError, json.JSONDecodeError):
            body = None
        return ApiResponse(status=reply.status_code, body=body, text=reply.text[:500])


class DryRunBackend:
    """Sends nothing: answers every request with TikTok's OK envelope and keeps it.

    Used by ``sync --dry-run`` so that a dry run takes exactly the route a real run
    takes, up to the wire.
    """

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep  # keep every request (tests); a dry run of millions does not
        self.requests: list[ApiRequest] = []

    def __repr__(self) -> str:
        return "DryRunBackend()"

    def send(self, request: ApiRequest) -> ApiResponse:
        if self.keep:
            self.requests.append(request)
        body = {"code": 0, "message": "OK (dry run: not sent)", "request_id": "dry-run", "data": {}}
        return ApiResponse(status=200, body=body)
