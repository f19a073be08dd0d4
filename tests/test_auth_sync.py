"""Sync with the token store: which token, revoked mid-run, scopes, refresh.

Tokens here are real ones of the fake's OAuth side: a code approved on the fake's
consent page, exchanged with ``TikTokOAuth`` and saved in the store, as ``auth login``
does. Every run checks that each event is delivered or rejected, exactly once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, oauth_fake

from destination.backends import Backend
from destination.errors import AuthenticationError, ConfigurationError
from destination.fake_server import FakeTikTok
from destination.runner.sync import SyncOptions, run_sync
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, StaticToken, TikTokApi
from destination.tiktok.auth.oauth import TikTokOAuth
from destination.tiktok.auth.store import TokenEntry, TokenStore
from tests.fake_backends import AfterRequests

ROOT = Path(__file__).resolve().parent.parent
REDIRECT = "http://127.0.0.1:9/callback"


def authorize(fake: FakeTikTok, store: TokenStore, app_id: str = APP_ID) -> TokenEntry:
    """What ``auth login`` leaves behind: approve, exchange, store."""
    reply = fake.consent_decision(
        {"app_id": app_id, "redirect_uri": REDIRECT, "state": "s", "decision": "approve"}
    )
    assert reply.location is not None
    code = parse_qs(urlsplit(reply.location).query)["auth_code"][0]
    grant = TikTokOAuth(fake, app_id, Secret(APP_SECRET)).exchange_code(code, REDIRECT)
    entry = TokenEntry(
        app_id=app_id,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        advertiser_ids=grant.advertiser_ids,
        scopes=grant.scopes,
        created_at="2026-01-31T12:00:00Z",
        base_url="https://business-api.tiktok.com",
    )
    store.save(entry)
    return entry


def audience_event(user: str, audience_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Audience Entered",
        "userId": user,
        "context": {
            "personas": {
                "computation_key": "vip",
                "external_audience_id": audience_id,
                "audience_settings": {"advertiserId": ADVERTISER},
            },
            "traits": {"email": f"{user}@example.com"},
        },
    }


@dataclass
class Run:
    summary: dict[str, Any]
    rejected: list[dict[str, Any]]


class Setup:
    """A store, a mapping and a fake with one audience; ``sync`` runs against them."""

    def __init__(self, tmp_path: Path, fake: FakeTikTok) -> None:
        self.tmp = tmp_path
        self.fake = fake
        self.store = TokenStore(tmp_path / "config" / "tokens.json")
        self.audience = fake.add_audience(ADVERTISER, "vip")
        document = json.loads((ROOT / "mappings" / "segment-native.json").read_text("utf-8"))
        document["settings"].update(
            {
                "qps": 0,
                "retry_initial_wait": 0,
                "max_attempts": 2,
                "batch_size": 10,
                "concurrency": 1,
            }
        )
        self.mapping = tmp_path / "mapping.json"
        self.mapping.write_text(json.dumps(document), "utf-8")
        self.environ: dict[str, str] = {
            "TIKTOK_TOKEN_STORE": str(self.store.path),
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        }
        self.runs = 0

    def events(self, count: int) -> list[dict[str, Any]]:
        return [audience_event(f"user{i}", self.audience) for i in range(count)]

    def sync(self, events: Sequence[dict[str, Any]], backend: Backend | None = None) -> Run:
        self.runs += 1
        source = self.tmp / f"events-{self.runs}.ndjson"
        source.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
        rejected = self.tmp / f"rejected-{self.runs}.ndjson"
        summary = run_sync(
            SyncOptions(mapping=self.mapping, events=str(source), rejected=rejected),
            environ=self.environ,
            backend=backend or self.fake,
        )
        records = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
        assert summary["received"] == len(events)
        assert summary["received"] == summary["delivered"] + summary["rejected"]
        assert len(records) == summary["rejected"]
        assert Counter(r["reason"] for r in records) == summary["rejected_by_reason"]
        for record in records:
            assert record["event"] == events[record["line"] - 1]
        return Run(summary, records)

    def members(self) -> set[str]:
        return self.fake.members(self.audience).get("EMAIL_SHA256", set())

    def tokens_sent(self) -> list[str]:
        return [r.headers.get("Access-Token", "") for r in self.fake.requests]


# ----------------------------------------------------------------- which token


def test_sync_uses_the_stored_token_when_no_environment_token_is_set(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake())
    entry = authorize(setup.fake, setup.store)

    run = setup.sync(setup.events(3))

    assert run.summary["delivered"] == 3
    assert setup.tokens_sent()[-1] == entry.access_token.reveal()


def test_the_environment_token_wins_and_the_store_is_not_even_read(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake())
    setup.fake.add_token("env-token", [ADVERTISER])
    setup.store.path.parent.mkdir(parents=True)
    setup.store.path.write_text("{damaged", "utf-8")
    setup.environ["TIKTOK_ACCESS_TOKEN"] = "env-token"

    run = setup.sync(setup.events(2))

    assert run.summary["delivered"] == 2
    assert set(setup.tokens_sent()) == {"env-token"}


def test_several_stored_apps_need_tiktok_app_id(tmp_path: Path) -> None:
    fake = oauth_fake()
    fake.add_app("7100000000000000077", APP_SECRET, [ADVERTISER])
    setup = Setup(tmp_path, fake)
    authorize(fake, setup.store)
    second = authorize(fake, setup.store, app_id="7100000000000000077")

    with pytest.raises(ConfigurationError, match="set TIKTOK_APP_ID"):
        setup.sync(setup.events(1))

    setup.environ["TIKTOK_APP_ID"] = "7100000000000000077"
    assert setup.sync(setup.events(1)).summary["delivered"] == 1
    assert setup.tokens_sent()[-1] == second.access_token.reveal()


def test_a_damaged_store_is_a_configuration_error_before_any_request(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake())
    setup.store.path.parent.mkdir(parents=True)
    setup.store.path.write_text("{damaged", "utf-8")

    with pytest.raises(ConfigurationError, match="is not valid JSON"):
        setup.sync(setup.events(1))

    assert setup.fake.requests == []


# ------------------------------------------------------------ revoked mid-run


def test_a_revoked_stored_token_mid_sync_loses_nothing_and_names_auth_login(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path, oauth_fake())
    entry = authorize(setup.fake, setup.store)
    events = setup.events(50)
    revoke = AfterRequests(setup.fake, 2, lambda f: f.revoke_token(entry.access_token.reveal()))

    run = setup.sync(events, backend=revoke)

    stopped = run.summary["stopped"]
    assert stopped["reason"] == "auth"
    assert f"tiktok-audiences auth login --app-id {APP_ID}" in stopped["message"]
    assert run.summary["delivered"] == 20
    assert run.summary["rejected_by_reason"] == {"auth": 30}
    assert [r["line"] for r in run.rejected] == list(range(21, 51))
    assert all("auth login" in r["message"] for r in run.rejected)
    assert len(setup.members()) == 20

    authorize(setup.fake, setup.store)  # the user ran `auth login` again
    retry = setup.sync([r["event"] for r in run.rejected])

    assert retry.summary["delivered"] == 30
    assert retry.summary["stopped"] is None
    assert len(setup.members()) == 50


# ------------------------------------------------------------------- scopes


def test_a_token_without_the_write_scope_stops_before_any_request(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake(scopes=(30,)))
    authorize(setup.fake, setup.store)
    before = len(setup.fake.requests)

    with pytest.raises(ConfigurationError) as caught:
        setup.sync(setup.events(3))

    message = str(caught.value)
    assert "31 (create/update custom audiences)" in message
    assert f"auth login --app-id {APP_ID}" in message
    assert len(setup.fake.requests) == before  # nothing was written, nothing even asked


def test_a_stored_token_whose_scopes_tiktok_did_not_name_is_not_refused(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path, oauth_fake())
    entry = authorize(setup.fake, setup.store)
    setup.store.save(replace(entry, scopes=()))

    run = setup.sync(setup.events(2))

    assert run.summary["delivered"] == 2


def test_an_environment_token_has_no_known_scopes_and_is_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, oauth_fake())
    setup.fake.add_token("env-token", [ADVERTISER], scopes=[30])
    setup.environ["TIKTOK_ACCESS_TOKEN"] = "env-token"
    caplog.set_level(logging.DEBUG, logger="destination")

    run = setup.sync(setup.events(2))

    # TikTok itself refuses the write: the batch is rejected with its message.
    assert run.summary["rejected_by_reason"] == {"tiktok_rejected": 2}
    assert "lacks scope 31" in run.rejected[0]["message"]
    assert "scopes are unknown" in caplog.text


# ------------------------------------------------------------------- refresh


def test_an_expired_token_is_refreshed_once_stored_and_the_events_delivered(
    tmp_path: Path,
) -> None:
    setup = Setup(tmp_path, oauth_fake(issue_refresh_token=True))
    entry = authorize(setup.fake, setup.store)
    setup.fake.expire_token(entry.access_token.reveal())
    setup.environ["TIKTOK_APP_SECRET"] = APP_SECRET
    before = len(setup.fake.requests)

    run = setup.sync(setup.events(5))

    assert run.summary["delivered"] == 5
    assert run.summary["stopped"] is None
    paths = [r.path for r in setup.fake.requests[before:]]
    assert paths == ["segment/mapping/", "oauth2/refresh_token/", "segment/mapping/"]
    assert run.summary["requests"] == 3
    renewed = setup.store.get(APP_ID)
    assert renewed is not None
    assert renewed.access_token != entry.access_token
    assert renewed.refresh_token != entry.refresh_token
    assert setup.tokens_sent()[-1] == renewed.access_token.reveal()
    assert setup.fake.token_state(renewed.access_token.reveal()) == "active"
    assert len(setup.members()) == 5


def test_an_expired_token_without_a_refresh_token_stops_the_run(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake())
    entry = authorize(setup.fake, setup.store)
    setup.fake.expire_token(entry.access_token.reveal())
    setup.environ["TIKTOK_APP_SECRET"] = APP_SECRET

    run = setup.sync(setup.events(4))

    assert run.summary["stopped"]["reason"] == "auth"
    assert "auth login" in run.summary["stopped"]["message"]
    assert run.summary["rejected_by_reason"] == {"auth": 4}
    assert "oauth2/refresh_token/" not in [r.path for r in setup.fake.requests]


def test_a_refresh_token_without_the_app_secret_stops_with_a_hint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path, oauth_fake(issue_refresh_token=True))
    entry = authorize(setup.fake, setup.store)
    setup.fake.expire_token(entry.access_token.reveal())

    run = setup.sync(setup.events(2))

    assert run.summary["stopped"]["reason"] == "auth"
    assert "set TIKTOK_APP_SECRET to let it be refreshed" in caplog.text


def test_a_refused_refresh_stops_the_run_with_every_event_accounted_for(tmp_path: Path) -> None:
    setup = Setup(tmp_path, oauth_fake(issue_refresh_token=True))
    entry = authorize(setup.fake, setup.store)
    setup.fake.expire_token(entry.access_token.reveal())
    setup.fake.fail_next(40107, path="oauth2/refresh_token/")
    setup.environ["TIKTOK_APP_SECRET"] = APP_SECRET

    run = setup.sync(setup.events(3))

    assert run.summary["stopped"]["reason"] == "auth"
    assert "code 40107" in run.summary["stopped"]["message"]
    assert run.summary["rejected_by_reason"] == {"auth": 3}
    assert setup.store.get(APP_ID) == entry  # nothing new to store


class ExpiringProvider:
    """A provider whose every token is already expired: refresh must be tried once only."""

    reauthorize_hint = "log in again"

    def __init__(self, fake: FakeTikTok) -> None:
        self.fake = fake
        self.refreshes = 0
        self.token = "expiring-0"
        fake.add_token(self.token, [ADVERTISER])
        fake.expire_token(self.token)

    def current(self) -> Secret:
        return Secret(self.token)

    def can_refresh(self) -> bool:
        return True

    def refresh(self) -> None:
        self.refreshes += 1
        self.token = f"expiring-{self.refreshes}"
        self.fake.add_token(self.token, [ADVERTISER])
        self.fake.expire_token(self.token)


def test_the_api_client_refreshes_at_most_once_per_request() -> None:
    fake = oauth_fake()
    provider = ExpiringProvider(fake)
    api = TikTokApi(fake, provider, retry=RetryPolicy(initial_wait=0))

    with pytest.raises(AuthenticationError) as caught:
        api.user_info()

    assert caught.value.code == 40102
    assert provider.refreshes == 1
    assert caught.value.message.endswith("log in again")
    assert api.requests_sent == 3  # expired, refresh, expired again


def test_a_fixed_secret_still_works_as_the_token() -> None:
    fake = oauth_fake()
    fake.add_token("plain", [ADVERTISER])

    assert TikTokApi(fake, Secret("plain")).user_info()["id"]
    assert TikTokApi(fake, StaticToken(Secret("plain"))).user_info()["id"]


@pytest.mark.parametrize(
    ("code", "http_status"),
    [(40002, 200), (0, 404)],  # refused as invalid; an HTML 404 page, no envelope
    ids=["refused-as-invalid", "html-404"],
)
def test_a_refresh_that_fails_for_good_stops_the_run_instead_of_rejecting_batches(
    tmp_path: Path, code: int, http_status: int
) -> None:
    setup = Setup(tmp_path, oauth_fake(issue_refresh_token=True))
    entry = authorize(setup.fake, setup.store)
    setup.fake.expire_token(entry.access_token.reveal())
    setup.fake.fail_next(code, http_status=http_status, path="oauth2/refresh_token/", times=5)
    setup.environ["TIKTOK_APP_SECRET"] = APP_SECRET

    run = setup.sync(setup.events(25))  # three batches of at most 10

    assert run.summary["stopped"]["reason"] == "auth"
    assert "could not be refreshed" in run.summary["stopped"]["message"]
    assert "auth login" in run.summary["stopped"]["message"]
    assert run.summary["rejected_by_reason"] == {"auth": 25}
    refreshes = [r.path for r in setup.fake.requests].count("oauth2/refresh_token/")
    assert refreshes == 1  # tried once, not once per batch
    assert setup.store.get(APP_ID) == entry
