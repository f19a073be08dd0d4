"""The login: consent page, loopback redirect, code exchange, advertisers, token store.

``login`` makes a fresh ``state``, starts the one-shot callback server, hands the
consent URL to ``open_url`` (the browser, or printing it), waits for the redirect,
exchanges the code, lists the advertisers the token may manage and stores the entry.
Every failure (denied, forged ``state``, refused secret or code, no answer in time)
raises before anything is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from destination.backends import Backend
from destination.kit.settings import Secret
from destination.tiktok.api import RetryPolicy
from destination.tiktok.auth.callback import CallbackServer
from destination.tiktok.auth.oauth import Advertiser, TikTokOAuth, consent_url, new_state
from destination.tiktok.auth.store import TokenEntry, TokenStore, utc_now

__all__ = ["LoginResult", "login"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginResult:
    entry: TokenEntry
    advertisers: list[Advertiser]


def login(
    *,
    app_id: str,
    secret: Secret,
    backend: Backend,
    base_url: str,
    auth_url: str,
    store: TokenStore,
    open_url: Callable[[str], None],
    timeout: float = 300.0,
    host: str = "127.0.0.1",
    port: int = 0,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LoginResult:
    """Authorize ``app_id`` through TikTok's consent page and store the token.

    ``retry`` (None: ``OAUTH_RETRY``) and ``sleep`` pace the retries of the calls to
    TikTok after the consent.
    """
    state = new_state()
    with CallbackServer(state, host=host, port=port) as callback:
        redirect_uri = callback.redirect_uri
        open_url(consent_url(auth_url, app_id=app_id, redirect_uri=redirect_uri, state=state))
        auth_code = callback.wait(timeout)
    log.debug("authorization code received; exchanging it")
    oauth = TikTokOAuth(backend, app_id, secret, retry=retry, sleep=sleep)
    grant = oauth.exchange_code(auth_code, redirect_uri)
    advertisers = oauth.advertisers(grant.access_token)
    entry = TokenEntry(
        app_id=app_id,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        advertiser_ids=grant.advertiser_ids or tuple(a.advertiser_id for a in advertisers),
        scopes=grant.scopes,
        created_at=utc_now(),
        base_url=base_url,
    )
    store.save(entry)
    return LoginResult(entry, advertisers)
