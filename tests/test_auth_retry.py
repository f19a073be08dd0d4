"""``auth login``'s token exchange (and the advertiser list, revoke and refresh) retry what
a flaky TikTok does to them, but never re-send a code TikTok has answered about.

The faults are the fake's own (``FaultPlan``), scripted request by request; ``fail_next``
gives TikTok's envelopes and a proxy's HTML pages. Waits between attempts go to a
recording no-op ``sleep``: no test waits for real.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, OTHER_ADVERTISER, oauth_fake, press

from destination.backends import Backend
from destination.errors import ApiUnavailableError, AuthenticationError
from destination.fake_server import FakeTikTok, FaultPlan, RunningServer, serve_in_thread
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, tiktok_backend
from destination.tiktok.auth.login import login
from destination.tiktok.auth.oauth import TikTokOAuth
from destination.tiktok.auth.store import TokenStore

EXCHANGE = "oauth2/access_token/"
ADVERTISERS = "oauth2/advertiser/get/"
REVOKE = "oauth2/revoke_token/"
REDIRECT = "http://127.0.0.1:9/callback"
POLICY = RetryPolicy(max_attempts=4, max_seconds=600.0, initial_wait=0.5, max_wait=4.0)


class ScriptedFaults(FaultPlan):
    """A fault plan that meets the n-th request with ``kinds[n]`` (None: no fault)."""

    def __init__(self, kinds: Sequence[str | None]) -> None:
        super().__init__({})
        self._kinds = list(kinds)

    def draw(self) -> str | None:
        return self._kinds.pop(0) if self._kinds else None


class Sleeps(list[float]):
    """A ``sleep`` that only records how long it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> FakeTikTok:
    return oauth_fake()


@pytest.fixture
def server(fake: FakeTikTok) -> Iterator[RunningServer]:
    with serve_in_thread(fake) as running:
        yield running


def paths(fake: FakeTikTok) -> list[str]:
    return [r.path for r in fake.requests]


def code_for(fake: FakeTikTok) -> str:
    reply = fake.consent_decision(
        {"app_id": APP_ID, "redirect_uri": REDIRECT, "state": "s", "decision": "approve"}
    )
    assert reply.location is not None
    return parse_qs(urlsplit(reply.location).query)["auth_code"][0]


def oauth(backend: Backend, sleeps: Sleeps) -> TikTokOAuth:
    return TikTokOAuth(backend, APP_ID, Secret(APP_SECRET), retry=POLICY, sleep=sleeps)


def run_login(
    fake: FakeTikTok, server: RunningServer, store: TokenStore, sleeps: Sleeps, backend: Backend
) -> object:
    return login(
        app_id=APP_ID,
        secret=Secret(APP_SECRET),
        backend=backend,
        base_url=server.base_url,
        auth_url=f"{server.base_url}/portal/auth",
        store=store,
        open_url=press,
        timeout=60,
        retry=POLICY,
        sleep=sleeps,
    )


# ------------------------------------------------------------------- the whole login


@pytest.mark.parametrize("fault", ["drop_before", "http_503", "http_429", "50002", "40100"])
def test_login_gets_through_a_failed_token_exchange(
    fault: str, fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    """Each kind of transient failure on the exchange is retried, and the login ends well."""
    fake.inject_faults(ScriptedFaults([fault]))
    store, sleeps = TokenStore(tmp_path / "tokens.json"), Sleeps()

    run_login(fake, server, store, sleeps, fake)

    entry = store.get(APP_ID)
    assert entry is not None
    assert entry.access_token.reveal() == fake.issued_tokens(APP_ID)[-1]
    assert entry.advertiser_ids == (ADVERTISER, OTHER_ADVERTISER)
    assert paths(fake) == [EXCHANGE, EXCHANGE, ADVERTISERS]
    assert len(sleeps) == 1  # one backoff, given to the injected sleep


def test_login_over_http_retries_a_connection_closed_without_a_reply(
    fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    fake.inject_faults(ScriptedFaults(["drop_before", "drop_before", None, "drop_before"]))
    store, sleeps = TokenStore(tmp_path / "tokens.json"), Sleeps()

    run_login(fake, server, store, sleeps, tiktok_backend(server.base_url))

    assert store.get(APP_ID) is not None
    assert paths(fake) == [EXCHANGE, EXCHANGE, EXCHANGE, ADVERTISERS, ADVERTISERS]
    assert len(fake.issued_tokens(APP_ID)) == 1


def test_a_lost_reply_to_the_exchange_says_to_log_in_again(
    fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    """TikTok carried out the exchange (the code is used) but the reply never came: the
    retry is refused with 40110, and the message says what happened and what to do."""
    fake.inject_faults(ScriptedFaults(["drop_after"]))
    store, sleeps = TokenStore(tmp_path / "tokens.json"), Sleeps()

    with pytest.raises(AuthenticationError) as caught:
        run_login(fake, server, store, sleeps, tiktok_backend(server.base_url))

    message = str(caught.value)
    assert caught.value.code == 40110
    assert "reply was lost" in message
    assert f"auth login --app-id {APP_ID}" in message
    assert "TIKTOK_APP_SECRET" not in message  # the secret is not what went wrong
    assert paths(fake) == [EXCHANGE, EXCHANGE]  # tried again once, then no more
    assert not store.path.exists()


# ------------------------------------------------------- what is never sent again


@pytest.mark.parametrize(("code", "expected"), [(40110, "auth_code"), (40101, "TIKTOK_APP_SECRET")])
def test_an_answer_about_the_code_or_the_secret_is_not_retried(
    code: int, expected: str, fake: FakeTikTok
) -> None:
    """A code works once: after TikTok answered about it, it is never sent again."""
    fake.fail_next(code, message="The auth_code is invalid", path=EXCHANGE, times=3)
    sleeps = Sleeps()

    with pytest.raises(AuthenticationError) as caught:
        oauth(fake, sleeps).exchange_code(code_for(fake), REDIRECT)

    assert caught.value.code == code
    assert expected in str(caught.value)
    assert "reply was lost" not in str(caught.value)  # no reply was lost
    assert paths(fake) == [EXCHANGE]
    assert sleeps == []


def test_a_used_code_after_only_busy_answers_is_not_called_a_lost_reply(
    fake: FakeTikTok,
) -> None:
    """TikTok answered "busy" (the code was not used then): a later 40110 is about the
    code itself, not about a lost reply."""
    fake.fail_next(50000, path=EXCHANGE)
    fake.fail_next(40110, message="The auth_code has expired", path=EXCHANGE)

    with pytest.raises(AuthenticationError) as caught:
        oauth(fake, Sleeps()).exchange_code(code_for(fake), REDIRECT)

    assert "reply was lost" not in str(caught.value)
    assert paths(fake) == [EXCHANGE, EXCHANGE]


def test_retries_stop_after_the_policy_s_attempts(fake: FakeTikTok) -> None:
    fake.inject_faults(FaultPlan({"drop_before": 1.0}))
    sleeps = Sleeps()

    with pytest.raises(ApiUnavailableError, match="try again later") as caught:
        oauth(fake, sleeps).exchange_code(code_for(fake), REDIRECT)

    assert "gave up after 4 attempts" in str(caught.value)
    assert paths(fake) == [EXCHANGE] * 4
    assert len(sleeps) == 3
    assert fake.issued_tokens(APP_ID) == []


def test_a_refused_connection_is_retried_then_reported() -> None:
    dead = serve_in_thread(FakeTikTok())
    dead.stop()  # the port is free again: connections are refused
    sleeps = Sleeps()

    with pytest.raises(ApiUnavailableError, match="gave up after 4 attempts"):
        oauth(tiktok_backend(dead.base_url), sleeps).exchange_code("code", REDIRECT)

    assert len(sleeps) == 3


# ------------------------------------------------------------ advertisers, revoke


def test_listing_the_advertisers_is_retried(fake: FakeTikTok) -> None:
    grant = oauth(fake, Sleeps()).exchange_code(code_for(fake), REDIRECT)
    fake.inject_faults(ScriptedFaults(["drop_after", "http_500"]))

    advertisers = oauth(fake, Sleeps()).advertisers(grant.access_token)

    assert [a.advertiser_id for a in advertisers] == [ADVERTISER, OTHER_ADVERTISER]
    assert paths(fake)[1:] == [ADVERTISERS] * 3


def test_revoke_is_retried_and_the_token_ends_revoked(fake: FakeTikTok) -> None:
    grant = oauth(fake, Sleeps()).exchange_code(code_for(fake), REDIRECT)
    fake.inject_faults(ScriptedFaults(["drop_before", "51305"]))

    oauth(fake, Sleeps()).revoke(grant.access_token)

    assert fake.token_state(grant.access_token.reveal()) == "revoked"
    assert paths(fake)[1:] == [REVOKE] * 3


def test_a_refresh_is_retried() -> None:
    fake = oauth_fake(issue_refresh_token=True)
    grant = oauth(fake, Sleeps()).exchange_code(code_for(fake), REDIRECT)
    assert grant.refresh_token is not None
    fake.inject_faults(ScriptedFaults(["drop_before", "http_503"]))

    renewed = oauth(fake, Sleeps()).refresh(grant.refresh_token)

    assert fake.token_state(renewed.access_token.reveal()) == "active"
    assert paths(fake)[1:] == ["oauth2/refresh_token/"] * 3
