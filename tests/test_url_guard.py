"""The URL guard: a base URL or consent page URL is parsed once, by the parser that
connects (urllib3's), and rebuilt from its checked parts; only the rebuilt string is used.

``urlsplit`` and urllib3 read ``http://evil.example\\@127.0.0.1:8765`` differently: the
first sees the loopback host, the second connects to ``evil.example`` in clear text with
the access token. Such URLs, and anything else one parser may read another way (user
info, fragments, queries, paths, whitespace, control characters), are refused before any
request, with a message that never shows the user info.

Nothing here may reach another host: an autouse fixture makes every name lookup of a
non-loopback host fail (and records it), so even the unfixed code could not leak; the
end-to-end test runs the command line in a network namespace that has only loopback.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, oauth_fake, press
from urllib3.util import parse_url

from destination.backends import ApiRequest, DryRunBackend, check_base_url, check_url
from destination.cli import main
from destination.demo import DEMO_ADVERTISER_ID, demo_fake
from destination.errors import ConfigurationError
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.settings import Secret
from destination.tiktok.api import tiktok_backend
from destination.tiktok.auth.provider import token_for_run
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DEMO_EVENTS = ROOT / "fixtures" / "demo" / "native-events.ndjson"
TOKEN = "url-guard-token-3f9a1c"
PASSWORD = "hunter2pw"  # the password in URLs with user info: never in a message
BYPASS = "http://evil.example\\@127.0.0.1:8765"
PORT = "8765"  # the port of the table's URLs; the command-line tests swap in the fake's

# (url, a word of the reason the message gives)
REFUSED = [
    pytest.param(BYPASS, "backslash", id="backslash-before-at"),
    pytest.param(f"http://u:{PASSWORD}@evil.example\\@127.0.0.1:8765", "backslash", id="both"),
    pytest.param("http://127.0.0.1:8765\\@evil.example", "backslash", id="backslash-after"),
    pytest.param("http://127.0.0.1:8765#@evil.example", "fragment", id="fragment-at"),
    pytest.param("http://127.0.0.1:8765/#x", "fragment", id="fragment"),
    pytest.param("http://127.0.0.1:8765?@evil.example", "query", id="query-at"),
    pytest.param("https://business-api.tiktok.com/?secret=s", "query", id="query"),
    pytest.param(f"http://u:{PASSWORD}@127.0.0.1:8765", "user", id="user-and-password"),
    pytest.param("http://alice@127.0.0.1:8765", "user", id="user"),
    pytest.param("http://@127.0.0.1:8765", "user", id="empty-user-info"),
    pytest.param(f"https://u:{PASSWORD}@business-api.tiktok.com", "user", id="user-https"),
    pytest.param("http://127.0.0.1:8765@evil.example", "user", id="loopback-as-user-info"),
    pytest.param("http://127.0.0.1:8765;@evil.example", "user", id="semicolon-user-info"),
    pytest.param("http://127.0.0.1:8765/open_api", "path", id="path"),
    pytest.param("http://127.0.0.1:8765/open_api/v1.3/", "path", id="versioned-path"),
    pytest.param("https://proxy.example.com/tiktok/", "path", id="proxy-path"),
    pytest.param("http://127.0.0.1:8765\t", "whitespace", id="tab-at-end"),
    pytest.param("http://127.0.0.1\t:8765", "whitespace", id="tab-inside"),
    pytest.param("http://127.0.0.1:8765\n", "whitespace", id="newline-at-end"),
    pytest.param("http://evil.example\n@127.0.0.1:8765", "whitespace", id="newline-inside"),
    pytest.param("http://127.0.0.1:8765/\r\nX-Injected: 1", "whitespace", id="crlf"),
    pytest.param("http://127.0.0.1 :8765", "whitespace", id="space"),
    pytest.param("http://127.0.0.1:8765\x00", "whitespace", id="nul"),
    pytest.param("http://127.0.0.1:8765\x7f", "whitespace", id="del"),
    pytest.param("http://evil.example\uff20127.0.0.1:8765", "ASCII", id="fullwidth-at"),
    pytest.param("http://127.0.0.1\u3002evil.example:8765", "ASCII", id="ideographic-dot"),
    pytest.param("http://127.0.0.1%2eevil.example:8765", "host", id="percent-in-host"),
    pytest.param("http://[fe80::1%25eth0]:8765", "host", id="zone-id"),
    pytest.param("http://127.0.0.1:99999", "valid URL", id="port-too-big"),
    pytest.param("http://127.0.0.1:0", "port", id="port-zero"),
    pytest.param("http://127.0.0.1:+1", "valid URL", id="port-sign"),
    pytest.param("http://:8765", "host", id="empty-host"),
    pytest.param("https://", "host", id="no-host"),
    pytest.param("http:/127.0.0.1:8765", "http(s) URL", id="one-slash"),
    pytest.param("http://-evil.example", "host", id="hyphen-label"),
    pytest.param("https://evil..example", "host", id="empty-label"),
    pytest.param("https://0x7f.1", "host", id="hex-ipv4"),
    pytest.param("https://127.1", "host", id="short-ipv4"),
    pytest.param("http://[::1", "valid URL", id="unclosed-bracket"),
    pytest.param("ftp://127.0.0.1:8765", "http", id="ftp"),
    pytest.param("127.0.0.1:8765", "http", id="no-scheme"),
    pytest.param("//127.0.0.1:8765", "http", id="scheme-relative"),
    pytest.param("http://evil.example:8765", "plain http", id="plain-http-off-loopback"),
    pytest.param("http://10.0.0.1", "plain http", id="plain-http-private"),
    pytest.param("http://localhost.example.com", "plain http", id="localhost-lookalike"),
]

# (url, what it is rebuilt to)
ACCEPTED = [
    ("https://business-api.tiktok.com", "https://business-api.tiktok.com"),
    ("https://sandbox-ads.tiktok.com/", "https://sandbox-ads.tiktok.com"),
    ("HTTPS://Business-API.TikTok.com", "https://business-api.tiktok.com"),
    ("https://10.0.0.1:8443", "https://10.0.0.1:8443"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
    ("http://127.5.6.7", "http://127.5.6.7"),
    ("http://[::1]:8765", "http://[::1]:8765"),
    ("http://localhost:1", "http://localhost:1"),
    ("HTTP://LOCALHOST:65535/", "http://localhost:65535"),
]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def lookups_off_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every name lookup of a non-loopback host fails here (and is recorded): a connection
    goes through a lookup, so nothing in this file can reach another host."""
    real = socket.getaddrinfo
    tried: list[str] = []

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not _loopback(name):
            tried.append(name)
            raise socket.gaierror(socket.EAI_NONAME, "test: only loopback may be looked up")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield tried
    assert tried == [], f"something tried to reach {tried}"


def _port(url: str, port: int) -> str:
    return url.replace(f":{PORT}", f":{port}")


# ------------------------------------------------------------------------ the guard


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_check_base_url_refuses_what_another_parser_could_read_differently(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_base_url(url)

    message = str(caught.value)
    assert message.startswith("base_url ")
    assert reason in message
    assert PASSWORD not in message
    assert "\n" not in message and "\t" not in message


@pytest.mark.parametrize(("url", "rebuilt"), ACCEPTED)
def test_check_base_url_rebuilds_the_url_from_its_scheme_host_and_port(
    url: str, rebuilt: str
) -> None:
    assert check_base_url(url) == rebuilt


@pytest.mark.parametrize("url", [rebuilt for _, rebuilt in ACCEPTED])
def test_every_parser_reads_the_same_host_and_port_in_a_rebuilt_url(url: str) -> None:
    split, parsed = urlsplit(url), parse_url(url)
    prepared = urlsplit(requests.Request("GET", f"{url}/open_api/").prepare().url or "")

    assert check_base_url(url) == url  # rebuilding is stable
    assert split.username is None and parsed.auth is None and prepared.username is None
    assert (split.hostname, split.port) == (prepared.hostname, prepared.port)
    assert (parsed.host or "").strip("[]") == split.hostname
    assert parsed.port == split.port


def test_user_info_is_shown_as_stars_in_the_message() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_base_url(f"http://alice:{PASSWORD}@127.0.0.1:8765")

    assert "'http://***@127.0.0.1:8765'" in str(caught.value)
    assert "alice" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "rebuilt"),
    [
        ("https://business-api.tiktok.com/portal/auth", "https://business-api.tiktok.com/portal/auth"),
        ("http://127.0.0.1:8765/portal/auth", "http://127.0.0.1:8765/portal/auth"),
        ("HTTP://[::1]:8765/portal/auth", "http://[::1]:8765/portal/auth"),
        ("https://business-api.tiktok.com", "https://business-api.tiktok.com"),
    ],
)  # fmt: skip
def test_the_consent_page_url_keeps_its_path(url: str, rebuilt: str) -> None:
    assert check_url(url, name="TIKTOK_AUTH_URL", path=True) == rebuilt


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://evil.example\\@127.0.0.1:8765/portal/auth", "backslash"),
        ("http://127.0.0.1:8765\\@evil.example/portal/auth", "backslash"),
        ("http://127.0.0.1:8765/portal\\auth", "backslash"),
        (f"http://u:{PASSWORD}@127.0.0.1:8765/portal/auth", "user"),
        ("http://127.0.0.1:8765/portal/auth#@evil.example", "fragment"),
        ("http://127.0.0.1:8765/portal/auth?app_id=1", "query"),
        ("http://127.0.0.1:8765/portal/\tauth", "whitespace"),
        ("http://evil.example/portal/auth", "plain http"),
        ("ftp://127.0.0.1:8765/portal/auth", "http"),
    ],
)
def test_the_consent_page_url_is_refused_for_the_base_url_ambiguities(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_url(url, name="TIKTOK_AUTH_URL", path=True)

    message = str(caught.value)
    assert message.startswith("TIKTOK_AUTH_URL ")
    assert reason in message
    assert PASSWORD not in message


# ----------------------------------------------------------------------- HttpBackend


class RecordingAdapter(requests.adapters.BaseAdapter):
    """The last step before the wire: keeps each prepared URL and answers OK."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.urls.append(request.url or "")
        reply = requests.Response()
        reply.status_code = 200
        reply._content = b'{"code": 0, "message": "OK", "data": {}}'
        reply.request, reply.url = request, request.url or ""
        return reply

    def close(self) -> None:
        """Nothing to close."""


def recording_session() -> tuple[requests.Session, RecordingAdapter]:
    adapter = RecordingAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, adapter


@pytest.mark.parametrize(
    ("base_url", "sent_to"),
    [
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765/open_api/v1.3/user/info/"),
        ("HTTP://LocalHost:1", "http://localhost:1/open_api/v1.3/user/info/"),
        ("http://[::1]:8765/", "http://[::1]:8765/open_api/v1.3/user/info/"),
    ],
)
def test_http_backend_sends_to_the_rebuilt_base_url(base_url: str, sent_to: str) -> None:
    session, adapter = recording_session()
    backend = tiktok_backend(base_url, session=session)

    backend.send(ApiRequest(method="GET", path="user/info/"))

    assert adapter.urls == [sent_to]
    assert backend.base_url == sent_to.removesuffix("/open_api/v1.3/user/info/")


def test_http_backend_refuses_the_bypass_before_sending_anything() -> None:
    session, adapter = recording_session()

    with pytest.raises(ConfigurationError, match="backslash"):
        tiktok_backend(BYPASS, session=session).send(ApiRequest(method="GET", path="user/info/"))

    assert adapter.urls == []


# ------------------------------------------------------------------- sync, in-process


@dataclass
class Served:
    fake: FakeTikTok
    base_url: str
    port: int
    state: Path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    """The demo fake TikTok on loopback, accepting TOKEN (given in the environment)."""
    fake = demo_fake()
    fake.add_token(TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
    state = tmp_path / "state" / "audiences.json"
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_AUDIENCE_STATE", str(state))
        port = urlsplit(server.base_url).port
        assert port is not None
        yield Served(fake, server.base_url, port, state)


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> CliRun:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    run = CliRun(code, out.getvalue(), capsys.readouterr().err)
    for secret in (TOKEN, APP_SECRET, PASSWORD):
        assert secret not in run.stdout + run.stderr
    return run


def error_lines(run: CliRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("tiktok-audiences: error:")]


def write_mapping(tmp_path: Path, **settings: Any) -> Path:
    document = json.loads((MAPPINGS / "segment-native.json").read_text("utf-8"))
    document["settings"].update({"qps": 0, "retry_initial_wait": 0, "concurrency": 1, **settings})
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def sync(capsys: pytest.CaptureFixture[str], mapping: Path, *extra: str) -> CliRun:
    return run_cli(capsys, "sync", "--mapping", mapping, "--events", DEMO_EVENTS, *extra)


def assert_refused(run: CliRun, served: Served, reason: str) -> None:
    assert run.code == 2, run.stderr
    (line,) = error_lines(run)
    assert line.startswith("tiktok-audiences: error: invalid settings: base_url ")
    assert reason in line
    assert run.stdout == ""
    assert served.fake.requests == []
    assert not served.state.exists()


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_sync_refuses_a_bad_base_url_flag_with_exit_2_before_any_request(
    url: str, reason: str, served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = sync(capsys, write_mapping(tmp_path), "--base-url", _port(url, served.port))

    assert_refused(run, served, reason)


SOURCES = [
    pytest.param(BYPASS, "backslash", id="bypass"),
    pytest.param("http://127.0.0.1:8765#@evil.example", "fragment", id="fragment"),
    pytest.param(f"http://u:{PASSWORD}@127.0.0.1:8765", "user", id="user-info"),
    pytest.param("http://127.0.0.1:8765/open_api", "path", id="path"),
]


@pytest.mark.parametrize(("url", "reason"), SOURCES)
def test_sync_refuses_a_bad_base_url_in_the_mapping_file(
    url: str, reason: str, served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = write_mapping(tmp_path, base_url=_port(url, served.port))

    assert_refused(sync(capsys, mapping), served, reason)


@pytest.mark.parametrize(("url", "reason"), SOURCES)
def test_sync_refuses_a_bad_base_url_in_the_environment(
    url: str,
    reason: str,
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOK_API_BASE_URL", _port(url, served.port))

    assert_refused(sync(capsys, write_mapping(tmp_path)), served, reason)


def test_sync_keeps_audiences_under_the_rebuilt_base_url_only(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = f"HTTP://127.0.0.1:{served.port}/"

    run = sync(capsys, write_mapping(tmp_path), "--base-url", written)

    assert run.code == 0, run.stderr
    assert served.fake.requests != []
    state = json.loads(served.state.read_text("utf-8"))
    assert f"http://127.0.0.1:{served.port}" in json.dumps(state)
    assert written not in json.dumps(state)


def test_user_info_never_reaches_the_audience_state(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = served.state.parent
    for url in (
        f"http://u:{PASSWORD}@127.0.0.1:{served.port}",
        f"http://u@127.0.0.1:{served.port}",
    ):
        run = sync(capsys, write_mapping(tmp_path), "--base-url", url)
        assert run.code == 2
    run = sync(capsys, write_mapping(tmp_path), "--base-url", served.base_url)
    assert run.code == 0, run.stderr

    written = "".join(p.read_text("utf-8", "replace") for p in state_dir.rglob("*") if p.is_file())
    assert PASSWORD not in written
    assert "u@" not in written
    assert served.base_url in written


# ---------------------------------------------------------------------------- auth


@dataclass
class AuthServed:
    fake: FakeTikTok
    base_url: str
    port: int
    store: TokenStore


@pytest.fixture
def auth_served(monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthServed]:
    fake = oauth_fake()
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_AUTH_URL", f"{server.base_url}/portal/auth")
        monkeypatch.setenv("TIKTOK_APP_SECRET", APP_SECRET)
        port = urlsplit(server.base_url).port
        assert port is not None
        yield AuthServed(fake, server.base_url, port, TokenStore(default_token_store(os.environ)))


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``webbrowser.open``, pressing Approve; keeps the URLs it was asked to open."""
    opened: list[str] = []

    def approve(url: str) -> bool:
        opened.append(url)
        press(url)
        return True

    monkeypatch.setattr("webbrowser.open", approve)
    return opened


def login(capsys: pytest.CaptureFixture[str], *extra: str) -> CliRun:
    return run_cli(capsys, "auth", "login", "--app-id", APP_ID, "--port", "0", *extra)


def test_login_stores_the_rebuilt_base_url_and_opens_the_rebuilt_consent_page(
    auth_served: AuthServed,
    browser: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOK_AUTH_URL", f"HTTP://127.0.0.1:{auth_served.port}/portal/auth")

    run = login(capsys, "--base-url", f"HTTP://127.0.0.1:{auth_served.port}/")

    assert run.code == 0, run.stderr
    entry = auth_served.store.get(APP_ID)
    assert entry is not None
    assert entry.base_url == auth_served.base_url
    (opened,) = browser
    assert opened.startswith(f"{auth_served.base_url}/portal/auth?app_id={APP_ID}&")


@pytest.mark.parametrize(("url", "reason"), SOURCES)
def test_login_refuses_a_bad_base_url_and_stores_nothing(
    url: str,
    reason: str,
    auth_served: AuthServed,
    browser: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = login(capsys, "--base-url", _port(url, auth_served.port))

    assert run.code == 2
    assert reason in run.stderr
    assert browser == []
    assert auth_served.fake.requests == []
    assert not auth_served.store.path.exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param(BYPASS + "/portal/auth", "backslash", id="bypass"),
        pytest.param("http://127.0.0.1:8765/portal/auth#@evil.example", "fragment", id="fragment"),
        pytest.param(f"http://u:{PASSWORD}@127.0.0.1:8765/portal/auth", "user", id="user-info"),
        pytest.param("http://evil.example/portal/auth", "plain http", id="plain-http"),
    ],
)
def test_login_refuses_a_bad_consent_page_url_before_opening_anything(
    url: str,
    reason: str,
    auth_served: AuthServed,
    browser: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOK_AUTH_URL", _port(url, auth_served.port))

    run = login(capsys)

    assert run.code == 2
    (line,) = error_lines(run)
    assert line.startswith("tiktok-audiences: error: TIKTOK_AUTH_URL ")
    assert reason in line
    assert browser == []
    assert auth_served.fake.requests == []
    assert not auth_served.store.path.exists()


def _store_entry(served: AuthServed, base_url: str) -> None:
    served.fake.add_token("stored-token-9d2e", [ADVERTISER])
    served.store.save(
        TokenEntry(
            app_id=APP_ID,
            access_token=Secret("stored-token-9d2e"),
            advertiser_ids=(ADVERTISER,),
            scopes=(31,),
            created_at="2026-01-31T12:00:00Z",
            base_url=base_url,
        )
    )


@pytest.mark.parametrize("command", ["status", "revoke"])
def test_auth_commands_refuse_the_bypass_and_send_neither_token_nor_secret(
    command: str,
    auth_served: AuthServed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _store_entry(auth_served, auth_served.base_url)
    monkeypatch.setenv("TIKTOK_API_BASE_URL", _port(BYPASS, auth_served.port))

    run = run_cli(capsys, "auth", command)

    assert run.code == 2
    assert "backslash" in run.stderr
    assert "stored-token-9d2e" not in run.stdout + run.stderr
    assert auth_served.fake.requests == []
    assert auth_served.fake.token_state("stored-token-9d2e") != "revoked"


def test_status_of_an_entry_stored_with_user_info_never_shows_it(
    auth_served: AuthServed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry written by an older version, which kept user info in the base URL."""
    _store_entry(auth_served, f"http://u:{PASSWORD}@127.0.0.1:{auth_served.port}")
    monkeypatch.delenv("TIKTOK_API_BASE_URL")

    run = run_cli(capsys, "auth", "status")

    assert run.code == 2
    (line,) = error_lines(run)
    assert line.startswith(f"tiktok-audiences: error: the stored token of app {APP_ID}: ")
    assert "must not hold a user name or password" in line
    assert f"issued by:    http://***@127.0.0.1:{auth_served.port}" in run.stdout
    assert auth_served.fake.requests == []


def test_a_run_warns_about_an_entry_stored_with_user_info_without_showing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry's base URL differs from the run's: the warning names it, redacted."""
    entry = TokenEntry(
        app_id=APP_ID,
        access_token=Secret("stored-token-9d2e"),
        advertiser_ids=(ADVERTISER,),
        scopes=(31,),
        created_at="2026-01-31T12:00:00Z",
        base_url=f"http://u:{PASSWORD}@127.0.0.1:8765",
    )
    caplog.set_level(logging.WARNING)

    token_for_run(
        env_token=None,
        entry=entry,
        store=TokenStore(tmp_path / "tokens.json"),
        backend=DryRunBackend(),
        base_url="http://127.0.0.1:8765",
        environ={},
    )

    assert "was issued by http://***@127.0.0.1:8765, but this run talks to" in caplog.text
    assert PASSWORD not in caplog.text


# ------------------------------------------------- end to end, in a loopback-only network

# Counts every name lookup and connection attempt of the command line, then runs it.
_COUNTING_MAIN = """
import socket, sys
tried = []
real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect
def lookup(host, *args, **kwargs):
    tried.append(("lookup", host))
    return real_lookup(host, *args, **kwargs)
def connect(self, address):
    tried.append(("connect", address))
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = lookup, connect
from destination.cli import main
code = main(sys.argv[1:])
print(f"network attempts: {len(tried)} {tried}", file=sys.stderr)
sys.exit(code)
"""


def _unshare_or_skip() -> None:
    """Skip (locally) when no network namespace can be made; in CI that is a failure."""
    try:
        probe = subprocess.run(
            ["unshare", "-n", "true"], check=False, capture_output=True, text=True
        )
        problem = probe.stderr.strip() if probe.returncode else ""
    except FileNotFoundError:
        problem = "unshare is not installed"
    if not problem:
        return
    reason = f"`unshare -n` is not available here ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must run this test")
    pytest.skip(reason)


def test_the_bypass_is_refused_before_any_connection_in_a_loopback_only_network(
    tmp_path: Path,
) -> None:
    _unshare_or_skip()
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHONPATH": str(ROOT),
        "TIKTOK_ACCESS_TOKEN": TOKEN,
        "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
    }
    argv: list[str | Path] = ["sync", "--mapping", write_mapping(tmp_path), "--events", DEMO_EVENTS]
    argv += ["--base-url", BYPASS]

    run = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", _COUNTING_MAIN, *map(str, argv)],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,  # guards against a hang only
        check=False,
    )

    assert run.returncode == 2, run.stderr
    assert "tiktok-audiences: error: invalid settings: base_url " in run.stderr
    assert "backslash" in run.stderr
    assert "network attempts: 0 []" in run.stderr
    assert TOKEN not in run.stdout + run.stderr
    assert not (tmp_path / "audiences.json").exists()
