"""A token however it is written never reaches a log line (issue 14: a token holding a
control character was printed by a ``--debug`` line, escaped as in a repr)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from destination.backends import ApiRequest
from destination.cli import main
from destination.errors import ConfigurationError, PermanentError, RetryableError
from destination.settings import resolve_settings
from destination.tiktok.api import tiktok_backend
from tests.test_sync import audience_event, write_events, write_mapping

ODD_TOKENS = [
    "tok\nen-5b1e9c",
    "tok\ren-5b1e9c",
    "tok\x01en-5b1e9c",
    "tok\ten-5b1e9c",
    "tokén-5b1e",
]


def forms(token: str) -> list[str]:
    return [token, repr(token)[1:-1], token.encode("unicode_escape").decode(), "en-5b1e"]


@pytest.mark.parametrize("token", ODD_TOKENS)
def test_a_token_with_a_control_character_is_refused_without_being_shown(token: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings({}, environ={"TIKTOK_ACCESS_TOKEN": token}, overrides={}, need_token=True)
    text = str(caught.value)
    assert "TIKTOK_ACCESS_TOKEN holds whitespace, a control character" in text
    for form in forms(token):
        assert form not in text


def test_the_cli_refuses_such_a_token_with_debug_on_and_prints_it_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "demo\nsecret-5b1e9c"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", token)
    monkeypatch.setenv("TIKTOK_API_BASE_URL", "http://127.0.0.1:9")  # never reached
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    argv = ["--debug", "sync", "--mapping", str(write_mapping(tmp_path)), "--events", str(events)]

    out = io.StringIO()
    assert main(argv, stdout=out) == 2
    printed = out.getvalue() + capsys.readouterr().err
    for form in forms(token):
        assert form not in printed


@pytest.mark.parametrize("token", ODD_TOKENS)
def test_the_http_backend_logs_no_credential_of_a_request_it_cannot_send(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """requests refuses a header with a line break and quotes it in its error; the debug
    line keeps the error's kind and drops every spelling of the token."""
    backend = tiktok_backend("http://127.0.0.1:9")
    request = ApiRequest(
        "POST",
        "oauth2/refresh_token/",
        json={"secret": token, "refresh_token": token},
        headers={"Access-Token": token},
    )
    caplog.set_level(logging.DEBUG, logger="destination.backends")
    with pytest.raises((PermanentError, RetryableError)):  # nothing listens on port 9
        backend.send(request)
    assert "POST oauth2/refresh_token/" in caplog.text
    for form in forms(token):
        assert form not in caplog.text


def test_a_request_redacts_its_credentials_in_every_spelling() -> None:
    token = "a\x01b/c d"
    request = ApiRequest("GET", "x/", params={"secret": token}, headers={"Access-Token": token})
    text = f"{token} {token!r} {token.encode('unicode_escape').decode()} a%01b%2Fc%20d"
    assert request.redact(text) == "*** '***' *** ***"
