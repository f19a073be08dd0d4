"""The token store: private, atomic, one entry per app id, clear about damage."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from destination.errors import ConfigurationError
from destination.settings import Secret
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store

TOKEN = "store-test-token-0f1e2d3c"
REFRESH = "store-test-refresh-9a8b7c"


def entry(app_id: str = "app-1", token: str = TOKEN, **changes: object) -> TokenEntry:
    values: dict[str, object] = {
        "app_id": app_id,
        "access_token": Secret(token),
        "advertiser_ids": ("7000000000000000001",),
        "scopes": (30, 31),
        "created_at": "2026-01-31T12:00:00Z",
        "base_url": "https://business-api.tiktok.com",
        **changes,
    }
    return TokenEntry(**values)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_path_follows_xdg_config_home_and_the_override() -> None:
    assert default_token_store({"XDG_CONFIG_HOME": "/cfg"}) == Path(
        "/cfg/tiktok-audiences/tokens.json"
    )
    assert default_token_store({}) == Path.home() / ".config/tiktok-audiences/tokens.json"
    assert default_token_store(
        {"XDG_CONFIG_HOME": "/cfg", "TIKTOK_TOKEN_STORE": "/elsewhere/t.json"}
    ) == Path("/elsewhere/t.json")


def test_a_saved_entry_reads_back_and_the_file_is_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "config" / "tiktok-audiences" / "tokens.json")
    saved = entry(refresh_token=Secret(REFRESH))

    store.save(saved)

    assert store.get("app-1") == saved
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    document = json.loads(store.path.read_text("utf-8"))
    assert document["version"] == 1
    assert document["apps"]["app-1"]["access_token"] == TOKEN
    assert document["apps"]["app-1"]["refresh_token"] == REFRESH


def test_one_entry_per_app_id_and_saving_again_replaces_it(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(entry("app-1"))
    store.save(entry("app-2", token="other-token"))
    store.save(entry("app-1", token="renewed-token"))

    entries = store.entries()

    assert sorted(entries) == ["app-1", "app-2"]
    assert entries["app-1"].access_token.reveal() == "renewed-token"
    assert store.remove("app-2") is True
    assert store.remove("app-2") is False
    assert sorted(store.entries()) == ["app-1"]


def test_writes_replace_the_file_atomically_and_leave_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(entry())
    before = store.path.read_bytes()
    inode = store.path.stat().st_ino
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        calls.append((str(source), str(target)))
        assert Path(source).parent == store.path.parent  # same folder: rename is atomic
        assert mode(Path(source)) == 0o600  # private before it gets the final name
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    store.save(entry(token="new-token"))

    assert len(calls) == 1
    assert calls[0][1] == str(store.path)
    assert store.path.stat().st_ino != inode  # a new file took the old one's place
    assert store.path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_a_failed_write_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(entry())
    before = store.path.read_bytes()

    def broken(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(ConfigurationError, match="No space left"):
        store.save(entry(token="new-token"))

    assert store.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_concurrent_saves_of_different_apps_keep_both(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    threads = [
        threading.Thread(target=store.save, args=(entry(f"app-{i}", token=f"t{i}"),))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(store.entries()) == sorted(f"app-{i}" for i in range(8))


def test_an_existing_readable_file_is_made_private(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(entry())
    store.path.chmod(0o644)

    store.entries()

    assert mode(store.path) == 0o600


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "is not valid JSON (line 1)"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[]", 'with an "apps" object'),
        (b'{"version": 2, "apps": {}}', "version is not 1"),
        (b'{"version": 1, "apps": {"a": {"access_token": 5}}}', "apps/a/advertiser_ids"),
        (
            b'{"version": 1, "apps": {"a": {"access_token": "", "advertiser_ids": [],'
            b' "scopes": [], "created_at": "x", "base_url": "y"}}}',
            "apps/a/access_token is not a non-empty string",
        ),
    ],
)
def test_a_damaged_file_is_a_clear_configuration_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)

    with pytest.raises(ConfigurationError) as caught:
        TokenStore(path).entries()

    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "auth login" in message


def test_a_damaged_file_is_never_quoted_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 1, "apps": {"a": {"access_token": "' + TOKEN + '", ', "utf-8")

    with pytest.raises(ConfigurationError) as caught:
        TokenStore(path).entries()

    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None  # the JSON error (with the text) is not chained


def test_select_takes_the_named_app_or_the_only_one(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    assert store.select(None) is None  # nothing stored yet

    store.save(entry("app-1"))
    assert store.select(None) == entry("app-1")

    store.save(entry("app-2"))
    with pytest.raises(ConfigurationError, match="set TIKTOK_APP_ID"):
        store.select(None)
    assert store.select("app-2") == entry("app-2")
    with pytest.raises(ConfigurationError, match="auth login --app-id app-3"):
        store.select("app-3")


def test_entries_never_show_their_tokens(tmp_path: Path) -> None:
    shown = repr(entry(refresh_token=Secret(REFRESH))) + str(TokenStore(tmp_path / "t.json"))

    assert TOKEN not in shown
    assert REFRESH not in shown
