"""Tokens and secrets appear nowhere a failing run writes, even at DEBUG with --debug.

Each scenario runs ``main`` in-process over real HTTP (so urllib3's own debug lines are
produced too), with log records captured at DEBUG (``main``'s ``basicConfig`` is held
back so pytest's capture handler stays in place). Then stdout, stderr, every log record
(message and traceback), the pages the "browser" saw and every file under ``tmp_path``
are searched for the known token, refresh token and app secret. The token store is the
one place a token may be, and only while it is valid: it is left out of the search.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from oauth_support import ADVERTISER, APP_ID, oauth_fake, press

from destination.backends import ApiRequest
from destination.cli import main
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, tiktok_backend
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store
from tests.clock import HANG_GUARD

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "LEAKCHECK-token-7f3a9c51"
REFRESH = "LEAKCHECK-refresh-0d4e77b2"
SECRET = "LEAKCHECK-secret-2b8e1d90"


@pytest.fixture(autouse=True)
def debug_logs_captured(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)
    caplog.set_level(logging.DEBUG)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def everything_written(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    stdout: str,
    pages: list[str],
    store: Path,
) -> dict[str, str]:
    """Every place a run could have written, by name."""
    captured = capsys.readouterr()
    places = {"stdout": stdout, "stderr": captured.err + captured.out}
    for index, record in enumerate(caplog.records):
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        places[f"log record {index} ({record.name})"] = text
    places["log text"] = caplog.text
    for index, page in enumerate(pages):
        places[f"browser page {index}"] = page
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != store:
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return places


def assert_nowhere(places: dict[str, str], *secrets: str) -> None:
    for secret in secrets:
        found = [name for name, text in places.items() if secret in text]
        assert not found, f"a credential leaked into: {found}"


@pytest.mark.parametrize("failure", ["revoked", "expired and refresh refused"])
def test_a_failing_sync_leaks_no_token_refresh_token_or_secret(
    failure: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = oauth_fake(issue_refresh_token=True)
    fake.add_app("7100000000000000099", SECRET, [ADVERTISER])
    fake.add_token(TOKEN, [ADVERTISER])
    if failure == "revoked":
        fake.revoke_token(TOKEN)
    else:
        fake.expire_token(TOKEN)  # so the run tries to refresh, sending the secret
        fake.fail_next(40107, path="oauth2/refresh_token/")  # and the refresh is refused
    audience = fake.add_audience(ADVERTISER, "vip")
    with serve_in_thread(fake) as server:
        store = TokenStore(default_token_store({"XDG_CONFIG_HOME": str(tmp_path / "config")}))
        store.save(
            TokenEntry(
                app_id="7100000000000000099",
                access_token=Secret(TOKEN),
                refresh_token=Secret(REFRESH),
                advertiser_ids=(ADVERTISER,),
                scopes=(30, 31),
                created_at="2026-01-31T12:00:00Z",
                base_url=server.base_url,
            )
        )
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_APP_SECRET", SECRET)
        events = tmp_path / "events.ndjson"
        events.write_text(
            "".join(
                json.dumps(
                    {
                        "type": "track",
                        "event": "Audience Entered",
                        "context": {
                            "personas": {
                                "external_audience_id": audience,
                                "audience_settings": {"advertiserId": ADVERTISER},
                            },
                            "traits": {"email": f"user{i}@example.com"},
                        },
                    }
                )
                + "\n"
                for i in range(5)
            ),
            "utf-8",
        )
        mapping = json.loads((ROOT / "mappings" / "segment-native.json").read_text("utf-8"))
        mapping["settings"].update({"qps": 0, "retry_initial_wait": 0})
        (tmp_path / "mapping.json").write_text(json.dumps(mapping), "utf-8")
        out = io.StringIO()

        code = main(
            [
                "--debug",
                "sync",
                "--mapping",
                str(tmp_path / "mapping.json"),
                "--events",
                str(events),
                "--rejected",
                str(tmp_path / "rejected.ndjson"),
                "--audience-state",
                str(tmp_path / "audiences.json"),
            ],
            stdout=out,
        )

    assert code == 4
    if failure == "revoked":
        assert [r.path for r in fake.requests] == ["segment/mapping/"]
    else:
        assert [r.path for r in fake.requests] == ["segment/mapping/", "oauth2/refresh_token/"]
        assert fake.requests[1].json["secret"] == SECRET  # it was sent, so it could leak
    places = everything_written(tmp_path, caplog, capsys, out.getvalue(), [], store.path)
    assert "auth login --app-id 7100000000000000099" in places["stderr"]
    assert "rejected.ndjson" in "".join(places)
    assert any("urllib3" in name for name in places)  # transport debug lines were there
    assert_nowhere(places, TOKEN, REFRESH, SECRET)


@pytest.mark.parametrize("failure", ["wrong secret", "advertisers unavailable"])
def test_a_failing_login_leaks_no_token_or_secret(
    failure: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake: FakeTikTok = oauth_fake()
    app_id = APP_ID
    if failure == "advertisers unavailable":
        app_id = "7100000000000000099"
        fake.add_app(app_id, SECRET, [ADVERTISER])
        # every attempt fails; the login's retries come at once
        fake.fail_next(50002, path="oauth2/advertiser/get/", times=2)
        monkeypatch.setattr(
            "destination.tiktok.auth.oauth.OAUTH_RETRY", RetryPolicy(max_attempts=2, initial_wait=0)
        )
    pages: list[str] = []

    def browser(url: str) -> bool:
        answer = press(url)
        pages.extend(r.text for r in [*answer.history, answer])
        return True

    monkeypatch.setattr("webbrowser.open", browser)
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_AUTH_URL", f"{server.base_url}/portal/auth")
        monkeypatch.setenv("TIKTOK_APP_SECRET", SECRET)
        out = io.StringIO()

        code = main(["--debug", "auth", "login", "--app-id", app_id, "--port", "0"], stdout=out)

    store = default_token_store({"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")})
    assert not store.exists()
    sent = [r for r in fake.requests if r.path.startswith("oauth2/")]
    assert SECRET in json.dumps([r.json for r in sent] + [dict(r.params) for r in sent])
    issued = fake.issued_tokens(app_id)
    if failure == "wrong secret":
        assert code == 4
        assert issued == []
    else:
        assert code == 5
        assert len(issued) == 1  # a token was issued, then the login failed
    places = everything_written(tmp_path, caplog, capsys, out.getvalue(), pages, store)
    assert any(r.exc_info for r in caplog.records)  # --debug logged the traceback
    assert_nowhere(places, SECRET, *issued)


def test_the_secret_in_a_query_string_is_masked_in_transport_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = oauth_fake()
    with serve_in_thread(fake) as server:
        backend = tiktok_backend(server.base_url)
        backend.send(
            ApiRequest("GET", "oauth2/advertiser/get/", params={"app_id": APP_ID, "secret": SECRET})
        )
        requests.get(f"{server.base_url}/nothing", timeout=HANG_GUARD)  # other urllib3 lines stay

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("secret=***" in line for line in lines)
    assert not any(SECRET in line for line in lines)
