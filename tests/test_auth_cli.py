"""``tiktok-audiences auth login | status | logout | revoke`` in-process, through ``main``.

The fake TikTok runs over HTTP on loopback; its consent page is "used" by
``oauth_support.press`` in place of a browser (``webbrowser.open`` is replaced by it).
Every run checks that neither the token nor the app secret reached stdout or stderr.
"""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, forge, oauth_fake, press

from destination.cli import main
from destination.errors import ConfigurationError
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.settings import Secret
from destination.tiktok.auth.commands import read_app_secret
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    fake: FakeTikTok
    base_url: str
    store: TokenStore


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    fake = oauth_fake()
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_AUTH_URL", f"{server.base_url}/portal/auth")
        monkeypatch.setenv("TIKTOK_APP_SECRET", APP_SECRET)
        yield Served(fake, server.base_url, TokenStore(default_token_store(os.environ)))


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture[str], served: Served, *argv: str) -> CliRun:
    out = io.StringIO()
    code = main(list(argv), stdout=out)
    run = CliRun(code, out.getvalue(), capsys.readouterr().err)
    for token in served.fake.issued_tokens(APP_ID):
        assert token not in run.stdout + run.stderr
    assert APP_SECRET not in run.stdout + run.stderr
    return run


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[str], Any]]:
    """What ``webbrowser.open`` does: the first function in the list (Approve by default)."""
    actions: list[Callable[[str], Any]] = [press]
    monkeypatch.setattr("webbrowser.open", lambda url: actions[0](url) and True)
    return actions


def login(capsys: pytest.CaptureFixture[str], served: Served, *extra: str) -> CliRun:
    return run_cli(capsys, served, "auth", "login", "--app-id", APP_ID, "--port", "0", *extra)


# --------------------------------------------------------------------------- login


def test_login_opens_the_consent_page_and_stores_a_private_token(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    run = login(capsys, served)

    assert run.code == 0, run.stderr
    assert f"Connected app {APP_ID} for 2 advertiser(s)" in run.stdout
    assert f"{ADVERTISER}  Shoes" in run.stdout
    assert "31 (create/update custom audiences)" in run.stdout
    assert str(served.store.path) in run.stdout
    assert "/portal/auth?app_id=" in run.stderr  # the URL, in case no browser opened
    assert stat.S_IMODE(served.store.path.stat().st_mode) == 0o600
    entry = served.store.get(APP_ID)
    assert entry is not None
    assert entry.access_token.reveal() == served.fake.issued_tokens(APP_ID)[0]
    assert entry.base_url == served.base_url


def test_login_with_no_browser_prints_the_url_and_waits_for_the_redirect(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        """stderr; a "user" copies the URL into a browser as soon as it is printed."""

        def write(self, text: str) -> int:
            if text.startswith("http"):
                threading.Thread(target=press, args=(text.strip(),)).start()
            return super().write(text)

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("webbrowser.open", lambda url: pytest.fail("no browser was asked for"))
    out = io.StringIO()

    code = main(["auth", "login", "--app-id", APP_ID, "--no-browser", "--port", "0"], stdout=out)

    assert code == 0, terminal.getvalue()
    assert "Open this URL in a browser" in terminal.getvalue()
    assert served.store.get(APP_ID) is not None


def test_deny_exits_4_with_one_clear_line_and_no_token(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    browser[0] = lambda url: press(url, "deny")

    run = login(capsys, served)

    assert run.code == 4
    (error,) = [line for line in run.stderr.splitlines() if "error" in line]
    assert "authorization was denied in TikTok's consent page (you pressed Deny)" in error
    assert "auth login" in error
    assert not served.store.path.exists()


def test_a_forged_state_exits_4_and_stores_nothing(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    browser[0] = forge

    run = login(capsys, served)

    assert run.code == 4
    assert "state does not match" in run.stderr
    assert not served.store.path.exists()
    assert served.fake.requests == []


def test_a_wrong_secret_exits_4_and_names_the_variable(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOK_APP_SECRET", "not-the-secret")

    run = login(capsys, served)

    assert run.code == 4
    assert "TIKTOK_APP_SECRET" in run.stderr
    assert "not-the-secret" not in run.stderr
    assert not served.store.path.exists()


def test_login_without_a_secret_and_no_terminal_exits_2(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIKTOK_APP_SECRET")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    run = login(capsys, served)

    assert run.code == 2
    assert "set TIKTOK_APP_SECRET" in run.stderr
    assert "never taken as a flag" in run.stderr


def test_the_secret_is_never_a_flag(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    run = login(capsys, served, "--secret", "x")

    assert run.code == 2
    assert "unrecognized arguments: --secret" in run.stderr


def test_the_secret_is_asked_for_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return " typed-secret \n"

    secret = read_app_secret({}, stdin=Tty(), prompt=prompt)

    assert secret == Secret("typed-secret")
    assert prompts == ["TikTok app secret (not shown): "]
    assert read_app_secret({"TIKTOK_APP_SECRET": "env"}, stdin=Tty(), prompt=prompt) == Secret(
        "env"
    )
    with pytest.raises(ConfigurationError):
        read_app_secret({}, stdin=Tty(), prompt=lambda text: "")


# -------------------------------------------------------------------------- status


def test_status_shows_app_advertisers_scopes_and_that_the_token_works(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(capsys, served).code == 0
    before = len(served.fake.requests)

    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 0, run.stderr
    assert f"app {APP_ID} (sync uses it)" in run.stdout
    assert f"advertisers:  {ADVERTISER}, 7000000000000000002" in run.stdout
    assert "30 (read custom audiences), 31 (create/update custom audiences)" in run.stdout
    assert f"works:        yes ({served.base_url} accepted it)" in run.stdout
    assert [r.path for r in served.fake.requests[before:]] == ["user/info/"]  # cheap probe


def test_status_of_a_revoked_token_exits_4(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(capsys, served).code == 0
    served.fake.revoke_token(served.fake.issued_tokens(APP_ID)[0])

    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 4
    assert "works:        no: TikTok refused it (code 40105)" in run.stdout
    assert f"auth login --app-id {APP_ID}" in run.stderr


def test_status_shows_missing_scopes(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served.fake.add_token("narrow-token", [ADVERTISER], scopes=[30])
    served.store.save(
        TokenEntry(
            app_id=APP_ID,
            access_token=Secret("narrow-token"),
            advertiser_ids=(ADVERTISER,),
            scopes=(30,),
            created_at="2026-01-31T12:00:00Z",
            base_url=served.base_url,
        )
    )

    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 0
    assert "MISSING 31: sync will refuse to start" in run.stdout
    assert "narrow-token" not in run.stdout


def test_status_with_an_environment_token_says_it_overrides_the_store(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served.fake.add_token("env-token-123", [ADVERTISER])
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "env-token-123")

    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 0
    assert "TIKTOK_ACCESS_TOKEN (set: sync uses it, the token store is ignored)" in run.stdout
    assert "works:        yes" in run.stdout
    assert "env-token-123" not in run.stdout + run.stderr


def test_status_exits_on_the_token_sync_uses_when_the_environment_overrides_the_store(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert login(capsys, served).code == 0
    served.fake.revoke_token(served.fake.issued_tokens(APP_ID)[0])
    served.fake.add_token("env-token-123", [ADVERTISER])
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "env-token-123")

    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 0, run.stderr  # sync would work: it uses the environment's token
    assert "works:        no: TikTok refused it (code 40105)" in run.stdout  # still shown
    assert f"note: app {APP_ID} does not work, but sync uses TIKTOK_ACCESS_TOKEN" in run.stdout
    # asked about the stored app by name, its answer decides
    assert run_cli(capsys, served, "auth", "status", "--app-id", APP_ID).code == 4
    # and a refused environment token decides too
    served.fake.revoke_token("env-token-123")
    assert run_cli(capsys, served, "auth", "status").code == 4


def test_status_without_any_token_exits_2(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, served, "auth", "status")

    assert run.code == 2
    assert "not connected" in run.stderr
    assert "auth login --app-id" in run.stderr


# ------------------------------------------------------------------ logout, revoke


def test_logout_forgets_the_token_locally_only(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(capsys, served).code == 0
    token = served.fake.issued_tokens(APP_ID)[0]

    run = run_cli(capsys, served, "auth", "logout")

    assert run.code == 0
    assert f"forgot the token of app {APP_ID}" in run.stdout
    assert served.store.entries() == {}
    assert served.fake.token_state(token) == "active"
    again = run_cli(capsys, served, "auth", "logout")
    assert again.code == 0
    assert "nothing to forget" in again.stdout


def test_revoke_revokes_at_tiktok_then_forgets(
    served: Served, browser: list[Callable[[str], Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(capsys, served).code == 0
    token = served.fake.issued_tokens(APP_ID)[0]

    run = run_cli(capsys, served, "auth", "revoke", "--app-id", APP_ID)

    assert run.code == 0, run.stderr
    assert f"revoked the token of app {APP_ID} at TikTok and forgot it" in run.stdout
    assert served.fake.token_state(token) == "revoked"
    assert served.store.entries() == {}


def test_revoke_of_a_token_tiktok_no_longer_knows_still_forgets_it(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    served.store.save(
        TokenEntry(
            app_id=APP_ID,
            access_token=Secret("long-gone-token"),
            advertiser_ids=(ADVERTISER,),
            scopes=(31,),
            created_at="2026-01-31T12:00:00Z",
            base_url=served.base_url,
        )
    )

    run = run_cli(capsys, served, "auth", "revoke")

    assert run.code == 0
    assert "no longer knew the token" in run.stdout
    assert served.store.entries() == {}


def test_revoke_without_the_secret_keeps_the_token(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert login(capsys, served).code == 0
    monkeypatch.delenv("TIKTOK_APP_SECRET")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    run = run_cli(capsys, served, "auth", "revoke")

    assert run.code == 2
    assert served.store.get(APP_ID) is not None


# ------------------------------------------------------------- sync after login


def write_events(path: Path, count: int) -> Path:
    events = [
        {
            "type": "track",
            "event": "Audience Entered",
            "userId": f"user{i}",
            "context": {
                "personas": {
                    "computation_key": "vip",
                    "audience_settings": {"advertiserId": ADVERTISER},
                },
                "traits": {"email": f"user{i}@example.com"},
            },
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
    return path


def sync_argv(tmp_path: Path) -> list[str]:
    document = json.loads((ROOT / "mappings" / "segment-native.json").read_text("utf-8"))
    document["settings"].update({"qps": 0, "retry_initial_wait": 0})
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(document), "utf-8")
    return [
        "sync",
        "--mapping",
        str(mapping),
        "--events",
        str(write_events(tmp_path / "events.ndjson", 4)),
        "--rejected",
        str(tmp_path / "rejected.ndjson"),
        "--audience-state",
        str(tmp_path / "audiences.json"),
    ]


def test_sync_after_login_needs_no_token_variable(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert login(capsys, served).code == 0

    run = run_cli(capsys, served, *sync_argv(tmp_path))

    assert run.code == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["delivered"] == 4


def test_sync_with_a_revoked_stored_token_exits_4_and_says_to_log_in(
    served: Served,
    browser: list[Callable[[str], Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert login(capsys, served).code == 0
    served.fake.revoke_token(served.fake.issued_tokens(APP_ID)[0])

    run = run_cli(capsys, served, *sync_argv(tmp_path))

    assert run.code == 4
    assert f"run `tiktok-audiences auth login --app-id {APP_ID}`" in run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    assert summary["rejected_by_reason"] == {"auth": 4}


def test_sync_with_a_token_missing_scopes_exits_2_before_any_request(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served.store.save(
        TokenEntry(
            app_id=APP_ID,
            access_token=Secret("read-only-token"),
            advertiser_ids=(ADVERTISER,),
            scopes=(30, 32),
            created_at="2026-01-31T12:00:00Z",
            base_url=served.base_url,
        )
    )

    run = run_cli(capsys, served, *sync_argv(tmp_path))

    assert run.code == 2
    assert "lacks the scope(s) 31 (create/update custom audiences)" in run.stderr
    assert served.fake.requests == []
