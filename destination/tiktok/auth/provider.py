"""Which token a run uses, and the scope check before anything is written.

Precedence: ``TIKTOK_ACCESS_TOKEN`` (a ``StaticToken``), else the token store's entry
for ``TIKTOK_APP_ID`` or its only entry (a ``StoredToken``). A stored token that TikTok
calls expired (40102) is refreshed once when the entry has a refresh token and
``TIKTOK_APP_SECRET`` is set; the new token is written back to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from destination.backends import Backend, redact_url
from destination.errors import ConfigurationError
from destination.kit.settings import Secret
from destination.tiktok.api import StaticToken, TokenProvider
from destination.tiktok.auth.oauth import TikTokOAuth
from destination.tiktok.auth.store import APP_ID_VARIABLE, TokenEntry, TokenStore, utc_now
from destination.tiktok.settings import TOKEN_VARIABLE

__all__ = [
    "ENV_TOKEN_HINT",
    "REQUIRED_SCOPES",
    "SCOPE_NAMES",
    "SECRET_VARIABLE",
    "StoredToken",
    "check_scopes",
    "reauthorize_hint",
    "stored_entry",
    "token_for_run",
]

SECRET_VARIABLE = "TIKTOK_APP_SECRET"  # noqa: S105 (a variable name)
SCOPE_NAMES = {
    30: "read custom audiences",
    31: "create/update custom audiences",
    32: "share custom audiences",
}
#: Every action writes through segment/audience/ or segment/mapping/: scope 31.
REQUIRED_SCOPES = frozenset({31})
ENV_TOKEN_HINT = (
    f"TikTok did not accept the access token in {TOKEN_VARIABLE}; re-authorize and set "
    f"{TOKEN_VARIABLE} to the new token, or unset it and run "
    "`tiktok-audiences auth login --app-id <your app id>`"
)

log = logging.getLogger(__name__)


def reauthorize_hint(app_id: str) -> str:
    return (
        f"TikTok did not accept the stored access token of app {app_id}; re-authorize: run "
        f"`tiktok-audiences auth login --app-id {app_id}` (or set {TOKEN_VARIABLE} "
        "to a new token)"
    )


class StoredToken:
    """The token of a store entry; ``refresh`` renews it with the entry's refresh token."""

    def __init__(
        self,
        store: TokenStore,
        entry: TokenEntry,
        *,
        backend: Backend,
        app_secret: Secret | None,
    ) -> None:
        self._store = store
        self.entry = entry
        self._backend = backend
        self._app_secret = app_secret
        self.reauthorize_hint = reauthorize_hint(entry.app_id)

    def __repr__(self) -> str:
        return f"StoredToken(app_id={self.entry.app_id!r}, store={self._store!r})"

    @property
    def scopes(self) -> frozenset[int]:
        return frozenset(self.entry.scopes)

    def current(self) -> Secret:
        return self.entry.access_token

    def can_refresh(self) -> bool:
        if self.entry.refresh_token is None:
            return False
        if self._app_secret is None:
            log.warning(
                "the access token of app %s has expired; set %s to let it be refreshed",
                self.entry.app_id,
                SECRET_VARIABLE,
            )
            return False
        return True

    def refresh(self) -> None:
        assert self.entry.refresh_token is not None and self._app_secret is not None
        oauth = TikTokOAuth(self._backend, self.entry.app_id, self._app_secret)
        grant = oauth.refresh(self.entry.refresh_token)
        self.entry = replace(
            self.entry,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token or self.entry.refresh_token,
            advertiser_ids=grant.advertiser_ids or self.entry.advertiser_ids,
            scopes=grant.scopes or self.entry.scopes,
            created_at=utc_now(),
        )
        self._store.save(self.entry)
        log.info("refreshed the access token of app %s and stored it", self.entry.app_id)


def stored_entry(store: TokenStore, environ: Mapping[str, str]) -> TokenEntry | None:
    """The entry of ``TIKTOK_APP_ID``, or the only one; None when the store is empty."""
    return store.select(environ.get(APP_ID_VARIABLE, "").strip() or None)


def app_secret(environ: Mapping[str, str]) -> Secret | None:
    value = environ.get(SECRET_VARIABLE, "").strip()
    return Secret(value) if value else None


def token_for_run(
    *,
    env_token: Secret | None,
    entry: TokenEntry | None,
    store: TokenStore,
    backend: Backend,
    base_url: str,
    environ: Mapping[str, str],
) -> TokenProvider | None:
    """The token a run sends: the environment's first, else the stored entry's."""
    if env_token is not None:
        return StaticToken(env_token, reauthorize_hint=ENV_TOKEN_HINT)
    if entry is None:
        return None
    if entry.base_url != base_url:
        log.warning(
            "the stored token of app %s was issued by %s, but this run talks to %s",
            entry.app_id,
            redact_url(entry.base_url),  # an older version stored user info, if given
            base_url,
        )
    return StoredToken(store, entry, backend=backend, app_secret=app_secret(environ))


def check_scopes(tokens: TokenProvider) -> None:
    """Refuse to start writing with a token that lacks a needed scope (exit 2).

    Only stored tokens know their scopes (from the token exchange); TikTok offers no
    cheap call that tells an advertiser token's scopes, so an environment token is not
    checked (TikTok answers 40001 on the first write instead), nor is a stored token whose
    exchange named no scopes at all (unknown is not "none").
    """
    if not isinstance(tokens, StoredToken):
        log.debug("the access token's scopes are unknown (%s): not checked", TOKEN_VARIABLE)
        return
    if not tokens.scopes:
        log.debug("TikTok named no scopes for app %s's token: not checked", tokens.entry.app_id)
        return
    missing = sorted(REQUIRED_SCOPES - tokens.scopes)
    if missing:
        app_id = tokens.entry.app_id
        named = ", ".join(f"{s} ({SCOPE_NAMES.get(s, 'unknown')})" for s in missing)
        raise ConfigurationError(
            f"the stored token of app {app_id} lacks the scope(s) {named} needed to change "
            f"audiences; run `tiktok-audiences auth login --app-id {app_id}` again and grant "
            "them (in TikTok's developer portal the app must ask for them too)"
        )
