"""What the OAuth tests share: a fake TikTok with an app, and a scripted "user" for the
consent page (what a browser would do: load the page, press a button, follow the
redirect to the login's loopback callback)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from destination.fake_server import FakeTikTok
from tests.clock import HANG_GUARD

APP_ID = "7100000000000000042"
APP_SECRET = "oauth-test-secret-6c1d0b"
ADVERTISER = "7000000000000000001"
OTHER_ADVERTISER = "7000000000000000002"


def oauth_fake(
    *,
    scopes: tuple[int, ...] = (30, 31, 32),
    issue_refresh_token: bool = False,
) -> FakeTikTok:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER, name="Shoes")
    fake.add_advertiser(OTHER_ADVERTISER, name="Hats")
    fake.add_app(
        APP_ID,
        APP_SECRET,
        [ADVERTISER, OTHER_ADVERTISER],
        scopes=scopes,
        issue_refresh_token=issue_refresh_token,
    )
    return fake


def press(consent_url: str, decision: str = "approve") -> requests.Response:
    """Load the consent page and press Approve or Deny; the redirect is followed."""
    page = requests.get(consent_url, timeout=HANG_GUARD)
    assert page.status_code == 200, page.text
    assert f"id='{decision}'" in page.text
    parts = urlsplit(consent_url)
    fields = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return requests.post(
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        data={**fields, "decision": decision},
        timeout=HANG_GUARD,
    )


def forge(consent_url: str) -> requests.Response:
    """Call the login's callback directly with a code and a state it never sent."""
    redirect_uri = parse_qs(urlsplit(consent_url).query)["redirect_uri"][0]
    return requests.get(
        redirect_uri,
        params={"auth_code": "forged-code", "state": "forged-state"},
        timeout=HANG_GUARD,
    )
