"""TikTok's OAuth dialect on authlib, the loopback callback, and the whole login in-process.

The consent page is the fake's, served over HTTP; the "user" is ``oauth_support.press``
(``requests`` loading the page and posting a button, following the redirect to the
callback). The browser itself is driven in ``test_login_browser.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from oauth_support import ADVERTISER, APP_ID, APP_SECRET, OTHER_ADVERTISER, forge, oauth_fake, press

from destination.errors import ApiUnavailableError, AuthenticationError
from destination.fake_server import FakeTikTok, RunningServer, serve_in_thread
from destination.settings import Secret
from destination.tiktok.api import tiktok_backend
from destination.tiktok.auth.callback import CallbackServer, judge
from destination.tiktok.auth.login import login
from destination.tiktok.auth.oauth import TikTokOAuth, consent_url, new_state
from destination.tiktok.auth.store import TokenStore
from tests.clock import HANG_GUARD

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture
def fake() -> FakeTikTok:
    return oauth_fake()


@pytest.fixture
def server(fake: FakeTikTok) -> Iterator[RunningServer]:
    with serve_in_thread(fake) as running:
        yield running


def code_for(fake: FakeTikTok) -> str:
    reply = fake.consent_decision(
        {"app_id": APP_ID, "redirect_uri": REDIRECT, "state": "s", "decision": "approve"}
    )
    assert reply.location is not None
    return parse_qs(urlsplit(reply.location).query)["auth_code"][0]


def oauth(fake: FakeTikTok, secret: str = APP_SECRET) -> TikTokOAuth:
    return TikTokOAuth(fake, APP_ID, Secret(secret))


# ------------------------------------------------------------------ consent URL, state


def test_the_consent_url_has_tiktoks_documented_form() -> None:
    url = consent_url(
        "https://business-api.tiktok.com/portal/auth",
        app_id=APP_ID,
        redirect_uri="http://127.0.0.1:8766/callback",
        state="xyz",
    )

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "business-api.tiktok.com",
        "/portal/auth",
    )
    assert parse_qs(parts.query) == {
        "app_id": [APP_ID],
        "state": ["xyz"],
        "redirect_uri": ["http://127.0.0.1:8766/callback"],
    }


def test_each_login_gets_a_new_unguessable_state() -> None:
    states = {new_state() for _ in range(50)}

    assert len(states) == 50
    assert all(len(state) >= 32 for state in states)


# ----------------------------------------------------------------- the OAuth client


def test_the_code_exchange_sends_tiktoks_json_body_and_reads_the_envelope(
    fake: FakeTikTok,
) -> None:
    auth_code = code_for(fake)

    grant = oauth(fake).exchange_code(auth_code, REDIRECT)

    request = fake.requests[-1]
    assert request.path == "oauth2/access_token/"
    assert request.json == {"app_id": APP_ID, "secret": APP_SECRET, "auth_code": auth_code}
    assert grant.access_token.reveal() == fake.issued_tokens(APP_ID)[0]
    assert grant.advertiser_ids == (ADVERTISER, OTHER_ADVERTISER)
    assert grant.scopes == (30, 31, 32)
    assert grant.refresh_token is None


def test_a_wrong_secret_is_an_authentication_error_that_names_what_to_check(
    fake: FakeTikTok,
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        oauth(fake, secret="wrong-secret").exchange_code(code_for(fake), REDIRECT)

    assert caught.value.code == 40101
    assert "TIKTOK_APP_SECRET" in str(caught.value)
    assert "wrong-secret" not in str(caught.value)


def test_a_used_code_is_refused_with_40110(fake: FakeTikTok) -> None:
    auth_code = code_for(fake)
    oauth(fake).exchange_code(auth_code, REDIRECT)

    with pytest.raises(AuthenticationError) as caught:
        oauth(fake).exchange_code(auth_code, REDIRECT)

    assert caught.value.code == 40110
    assert "auth login" in str(caught.value)


def test_a_refresh_token_is_kept_and_renews_the_access_token() -> None:
    fake = oauth_fake(issue_refresh_token=True)
    first = oauth(fake).exchange_code(code_for(fake), REDIRECT)
    assert first.refresh_token is not None

    renewed = oauth(fake).refresh(first.refresh_token)

    assert fake.requests[-1].json == {
        "app_id": APP_ID,
        "secret": APP_SECRET,
        "refresh_token": first.refresh_token.reveal(),
        "grant_type": "refresh_token",
    }
    assert renewed.access_token != first.access_token
    assert renewed.refresh_token is not None
    assert renewed.refresh_token != first.refresh_token
    assert fake.token_state(renewed.access_token.reveal()) == "active"
    assert fake.token_state(first.access_token.reveal()) == "revoked"


def test_revoke_sends_the_token_and_tiktok_forgets_it(fake: FakeTikTok) -> None:
    grant = oauth(fake).exchange_code(code_for(fake), REDIRECT)

    oauth(fake).revoke(grant.access_token)

    assert fake.requests[-1].path == "oauth2/revoke_token/"
    assert fake.requests[-1].json == {
        "app_id": APP_ID,
        "secret": APP_SECRET,
        "access_token": grant.access_token.reveal(),
    }
    assert fake.token_state(grant.access_token.reveal()) == "revoked"


def test_advertisers_come_with_their_names(fake: FakeTikTok) -> None:
    grant = oauth(fake).exchange_code(code_for(fake), REDIRECT)

    advertisers = oauth(fake).advertisers(grant.access_token)

    assert [(a.advertiser_id, a.name) for a in advertisers] == [
        (ADVERTISER, "Shoes"),
        (OTHER_ADVERTISER, "Hats"),
    ]
    assert "'secret': '***'" in repr(fake.requests[-1])  # never shown, even in a repr
    assert APP_SECRET not in repr(fake.requests[-1])


def test_tiktok_out_of_reach_is_api_unavailable() -> None:
    dead = serve_in_thread(FakeTikTok())
    dead.stop()  # the port is free again: connections are refused

    with pytest.raises(ApiUnavailableError, match="try again later"):
        TikTokOAuth(
            tiktok_backend(dead.base_url), APP_ID, Secret(APP_SECRET), sleep=lambda _: None
        ).exchange_code("code", REDIRECT)  # retried without waiting (test_auth_retry.py)


# ----------------------------------------------------------------- the callback


@pytest.mark.parametrize(
    ("query", "ok", "expected"),
    [
        ("auth_code=c1&state=good", True, "received"),
        ("auth_code=c1&state=bad", False, "state does not match"),
        ("auth_code=c1", False, "state does not match"),
        ("error=access_denied&state=good", False, "you pressed Deny"),
        ("error=server_error&state=good", False, "'server_error'"),
        ("state=good", False, "no auth_code"),
    ],
)
def test_judge_reads_the_redirect(query: str, ok: bool, expected: str) -> None:
    outcome = judge(query, "good")

    assert (outcome.auth_code == "c1") is ok
    assert expected in outcome.message


def test_the_callback_ignores_other_paths_and_answers_once() -> None:
    with CallbackServer("good") as callback:
        base = callback.redirect_uri.rsplit("/", 1)[0]
        assert requests.get(f"{base}/favicon.ico", timeout=HANG_GUARD).status_code == 404
        first = requests.get(callback.redirect_uri + "?auth_code=c1&state=good", timeout=HANG_GUARD)
        again = requests.get(callback.redirect_uri + "?auth_code=c2&state=good", timeout=HANG_GUARD)

        assert callback.wait(HANG_GUARD) == "c1"

    assert first.status_code == 200
    assert "return to the terminal" in first.text
    assert again.status_code == 409


def test_the_callback_page_says_why_a_forged_reply_failed() -> None:
    with CallbackServer("good") as callback:
        page = requests.get(callback.redirect_uri + "?auth_code=c1&state=evil", timeout=HANG_GUARD)

        with pytest.raises(AuthenticationError, match="state does not match"):
            callback.wait(HANG_GUARD)

    assert page.status_code == 400
    assert "state does not match" in page.text


def test_no_answer_in_time_is_a_clear_error() -> None:
    with (
        CallbackServer("good") as callback,
        pytest.raises(
            AuthenticationError, match=r"no answer from TikTok's consent page within 0\.1 seconds"
        ),
    ):
        callback.wait(0.1)


# ----------------------------------------------------------------- the whole login


def run_login(
    fake: FakeTikTok, server: RunningServer, store: TokenStore, user: Callable[[str], object]
) -> object:
    return login(
        app_id=APP_ID,
        secret=Secret(APP_SECRET),
        backend=fake,
        base_url=server.base_url,
        auth_url=f"{server.base_url}/portal/auth",
        store=store,
        open_url=user,
        timeout=HANG_GUARD,
    )


def test_login_stores_the_token_of_the_approved_advertisers(
    fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    pages: list[requests.Response] = []

    run_login(fake, server, store, lambda url: pages.append(press(url)))

    assert pages[0].status_code == 200  # the callback's "you can close this window"
    entry = store.get(APP_ID)
    assert entry is not None
    assert entry.access_token.reveal() == fake.issued_tokens(APP_ID)[0]
    assert entry.advertiser_ids == (ADVERTISER, OTHER_ADVERTISER)
    assert entry.scopes == (30, 31, 32)
    assert entry.base_url == server.base_url
    assert entry.refresh_token is None
    paths = [r.path for r in fake.requests]
    assert paths == ["oauth2/access_token/", "oauth2/advertiser/get/"]


def test_deny_ends_the_login_without_a_token(
    fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    store = TokenStore(tmp_path / "tokens.json")

    with pytest.raises(AuthenticationError, match="denied in TikTok's consent page"):
        run_login(fake, server, store, lambda url: press(url, "deny"))

    assert not store.path.exists()
    assert fake.requests == []  # no code, so no exchange


def test_a_forged_state_ends_the_login_without_a_token(
    fake: FakeTikTok, server: RunningServer, tmp_path: Path
) -> None:
    store = TokenStore(tmp_path / "tokens.json")

    with pytest.raises(AuthenticationError, match="state does not match"):
        run_login(fake, server, store, forge)

    assert not store.path.exists()
    assert fake.requests == []
