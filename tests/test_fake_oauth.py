"""The fake TikTok's OAuth side: consent page, single-use expiring codes, token endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.fake_server.state import AUTH_CODE_SECONDS
from tests.clock import HANG_GUARD

APP = "7100000000000000009"
SECRET = "app-secret-for-tests"
ADVERTISERS = ["7000000000000000001", "7000000000000000002"]
REDIRECT = "http://127.0.0.1:9999/callback"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeTikTok:
    fake = FakeTikTok(clock=clock)
    fake.add_advertiser(ADVERTISERS[0], name="Shoes & Co")
    fake.add_advertiser(ADVERTISERS[1], name="Hats")
    fake.add_app(APP, SECRET, ADVERTISERS, scopes=[30, 31])
    return fake


def post(fake: FakeTikTok, path: str, body: Any, token: str | None = None) -> ApiResponse:
    headers = {} if token is None else {"Access-Token": token}
    return fake.send(ApiRequest("POST", path, json=body, headers=headers))


def envelope(response: ApiResponse) -> tuple[int, dict[str, Any]]:
    assert isinstance(response.body, dict)
    return response.body["code"], response.body["data"]


def approve(fake: FakeTikTok, state: str = "st-1") -> dict[str, str]:
    reply = fake.consent_decision(
        {"app_id": APP, "redirect_uri": REDIRECT, "state": state, "decision": "approve"}
    )
    assert reply.status == 302
    assert reply.location is not None
    assert reply.location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(reply.location).query).items()}


def exchange(fake: FakeTikTok, code: str, secret: str = SECRET) -> ApiResponse:
    return post(fake, "oauth2/access_token/", {"app_id": APP, "secret": secret, "auth_code": code})


def test_consent_page_shows_app_advertisers_scopes_and_both_buttons(fake: FakeTikTok) -> None:
    reply = fake.consent_page(
        {"app_id": APP, "redirect_uri": REDIRECT, "state": "<script>x</script>"}
    )

    assert reply.status == 200
    assert "Shoes &amp; Co" in reply.html
    assert "Create and update custom audiences" in reply.html
    assert "id='approve'" in reply.html
    assert "id='deny'" in reply.html
    assert "<script>x" not in reply.html  # what the request supplied is escaped


@pytest.mark.parametrize(
    "params",
    [
        {"app_id": "nope", "redirect_uri": REDIRECT},
        {"app_id": APP, "redirect_uri": "javascript:alert(1)"},
        {"app_id": APP},
    ],
)
def test_consent_page_refuses_unknown_apps_and_bad_redirects(
    fake: FakeTikTok, params: dict[str, str]
) -> None:
    assert fake.consent_page(params).status == 400


def test_approve_redirects_with_a_code_and_the_state(fake: FakeTikTok) -> None:
    query = approve(fake, state="abc")

    assert set(query) == {"auth_code", "state"}
    assert query["state"] == "abc"


def test_deny_redirects_with_access_denied_and_the_state(fake: FakeTikTok) -> None:
    reply = fake.consent_decision(
        {"app_id": APP, "redirect_uri": REDIRECT, "state": "abc", "decision": "deny"}
    )

    assert reply.status == 302
    assert reply.location is not None
    query = parse_qs(urlsplit(reply.location).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["abc"]
    assert "auth_code" not in query


def test_code_exchanges_for_a_token_of_the_apps_advertisers_and_scopes(fake: FakeTikTok) -> None:
    code, data = envelope(exchange(fake, approve(fake)["auth_code"]))

    assert code == 0
    assert data["advertiser_ids"] == ADVERTISERS
    assert data["scope"] == [30, 31]
    assert "refresh_token" not in data  # advertiser tokens are long-term
    assert fake.issued_tokens(APP) == [data["access_token"]]
    info = fake.send(
        ApiRequest("GET", "user/info/", headers={"Access-Token": data["access_token"]})
    )
    assert envelope(info)[0] == 0


def test_a_code_is_single_use(fake: FakeTikTok) -> None:
    auth_code = approve(fake)["auth_code"]
    assert envelope(exchange(fake, auth_code))[0] == 0

    assert envelope(exchange(fake, auth_code))[0] == 40110


def test_a_code_expires_after_an_hour(fake: FakeTikTok, clock: Clock) -> None:
    auth_code = approve(fake)["auth_code"]
    clock.now += AUTH_CODE_SECONDS

    assert envelope(exchange(fake, auth_code))[0] == 40110


def test_wrong_secret_is_40101_and_leaves_the_code_usable(fake: FakeTikTok) -> None:
    auth_code = approve(fake)["auth_code"]

    assert envelope(exchange(fake, auth_code, secret="wrong"))[0] == 40101
    assert envelope(exchange(fake, "made-up-code"))[0] == 40110
    assert envelope(exchange(fake, auth_code))[0] == 0


def test_advertiser_get_lists_the_tokens_advertisers_with_names(fake: FakeTikTok) -> None:
    token = envelope(exchange(fake, approve(fake)["auth_code"]))[1]["access_token"]

    reply = fake.send(
        ApiRequest(
            "GET",
            "oauth2/advertiser/get/",
            params={"app_id": APP, "secret": SECRET},
            headers={"Access-Token": token},
        )
    )

    code, data = envelope(reply)
    assert code == 0
    assert data["list"] == [
        {"advertiser_id": ADVERTISERS[0], "advertiser_name": "Shoes & Co"},
        {"advertiser_id": ADVERTISERS[1], "advertiser_name": "Hats"},
    ]
    bad = fake.send(
        ApiRequest("GET", "oauth2/advertiser/get/", params={"app_id": APP, "secret": "x"})
    )
    assert envelope(bad)[0] == 40101


def test_revoked_tokens_fail_with_40105(fake: FakeTikTok) -> None:
    token = envelope(exchange(fake, approve(fake)["auth_code"]))[1]["access_token"]

    revoke = {"app_id": APP, "secret": SECRET, "access_token": token}
    assert envelope(post(fake, "oauth2/revoke_token/", revoke))[0] == 0

    info = fake.send(ApiRequest("GET", "user/info/", headers={"Access-Token": token}))
    assert envelope(info)[0] == 40105
    assert fake.token_state(token) == "revoked"
    assert envelope(post(fake, "oauth2/revoke_token/", {**revoke, "secret": "x"}))[0] == 40101


def test_expired_tokens_fail_with_40102(fake: FakeTikTok) -> None:
    token = envelope(exchange(fake, approve(fake)["auth_code"]))[1]["access_token"]
    fake.expire_token(token)

    info = fake.send(ApiRequest("GET", "user/info/", headers={"Access-Token": token}))
    assert envelope(info)[0] == 40102


def test_refresh_token_renews_an_expired_token_once() -> None:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISERS[0])
    fake.add_app(APP, SECRET, ADVERTISERS[:1], issue_refresh_token=True)
    first = envelope(exchange(fake, approve(fake)["auth_code"]))[1]
    fake.expire_token(first["access_token"])

    body = {
        "app_id": APP,
        "secret": SECRET,
        "refresh_token": first["refresh_token"],
        "grant_type": "refresh_token",
    }
    code, renewed = envelope(post(fake, "oauth2/refresh_token/", body))

    assert code == 0
    assert renewed["access_token"] != first["access_token"]
    assert renewed["refresh_token"] != first["refresh_token"]
    assert renewed["advertiser_ids"] == ADVERTISERS[:1]
    assert envelope(post(fake, "oauth2/refresh_token/", body))[0] == 40107  # used up


def test_the_consent_page_over_http_approves_and_redirects(fake: FakeTikTok) -> None:
    with serve_in_thread(fake) as server:
        page = requests.get(
            f"{server.base_url}/portal/auth",
            params={"app_id": APP, "redirect_uri": REDIRECT, "state": "s"},
            timeout=HANG_GUARD,
        )
        answer = requests.post(
            f"{server.base_url}/portal/auth",
            data={"app_id": APP, "redirect_uri": REDIRECT, "state": "s", "decision": "approve"},
            allow_redirects=False,
            timeout=HANG_GUARD,
        )

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Approve" in page.text
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["s"]
    assert envelope(exchange(fake, query["auth_code"][0]))[0] == 0
