"""The fake TikTok's OAuth: developer apps, the consent portal and the ``oauth2/`` endpoints.

``OAuthPortal`` is the part of ``FakeTikTok`` that plays TikTok's advertiser
authorization. A test registers an app (``add_app``); the consent page
(``consent_page`` / ``consent_decision``, served at ``/portal/auth`` over HTTP, its HTML
from ``portal.py``) redirects with a single-use ``auth_code`` that expires after an hour
by the fake's clock; ``oauth2/access_token/`` exchanges it (with the app secret) for a
token of the app's advertisers and scopes; ``oauth2/advertiser/get/``,
``oauth2/revoke_token/`` and ``oauth2/refresh_token/`` (only for apps set to issue
refresh tokens) follow. These endpoints are authenticated by the app's id and secret,
not by an access token. Revoked tokens answer 40105, expired ones (``expire_token``)
40102, like any token of the shared store.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from destination.backends import ApiRequest
from destination.fake_server.checks import Rejected, bad, body_object
from destination.fake_server.portal import PortalReply, consent_html, error_html
from destination.fake_server.store import ALL_SCOPES, FakeStore, Grant

__all__ = ["AUTH_CODE_SECONDS", "OAuthPortal"]

#: How long an authorization code can be exchanged (TikTok: one hour, single use).
AUTH_CODE_SECONDS = 3600.0


@dataclass(frozen=True)
class _App:
    app_id: str
    secret: str
    name: str
    advertiser_ids: tuple[str, ...]
    scopes: tuple[int, ...]
    issue_refresh_token: bool


@dataclass
class _AuthCode:
    app_id: str
    issued_at: float
    used: bool = False


class OAuthPortal(FakeStore):
    """The part of ``FakeTikTok`` that authorizes apps; see the module docstring."""

    def __init__(self, **store: Any) -> None:
        super().__init__(**store)
        self._apps: dict[str, _App] = {}
        self._auth_codes: dict[str, _AuthCode] = {}
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> the access token it renews
        self._issued: dict[str, list[str]] = {}  # app id -> access tokens issued, in order
        self._oauth_counter = 0
        #: The endpoints authenticated by the app's id and secret: path -> method -> handler.
        self._app_routes: dict[str, dict[str, Callable[[ApiRequest], dict[str, Any]]]] = {
            "oauth2/access_token": {"POST": self._oauth_access_token},
            "oauth2/refresh_token": {"POST": self._oauth_refresh_token},
            "oauth2/revoke_token": {"POST": self._oauth_revoke_token},
            "oauth2/advertiser/get": {"GET": self._oauth_advertisers},
        }

    def add_app(
        self,
        app_id: str,
        secret: str,
        advertiser_ids: Sequence[str],
        scopes: Sequence[int] = ALL_SCOPES,
        *,
        issue_refresh_token: bool = False,
        name: str = "Fake app",
    ) -> None:
        """Register a developer app whose consent grants ``advertiser_ids`` and ``scopes``.

        With ``issue_refresh_token`` the token exchange also returns a refresh token
        (TikTok's advertiser tokens have none; creator tokens do).
        """
        if not app_id or not secret:
            raise ValueError("app_id and secret must be non-empty strings")
        if isinstance(advertiser_ids, str):
            raise TypeError("advertiser_ids must be a sequence of ids, not one string")
        with self._lock:
            self._check_known(advertiser_ids)
            if app_id in self._apps:
                raise ValueError(f"app {app_id} already exists")
            self._apps[app_id] = _App(
                app_id=app_id,
                secret=secret,
                name=name,
                advertiser_ids=tuple(advertiser_ids),
                scopes=tuple(scopes),
                issue_refresh_token=issue_refresh_token,
            )

    def issued_tokens(self, app_id: str) -> list[str]:
        """Access tokens issued to ``app_id`` through the OAuth flow, oldest first."""
        with self._lock:
            return list(self._issued.get(app_id, ()))

    # ------------------------------------------------------------------ consent page

    def consent_page(self, params: Mapping[str, str]) -> PortalReply:
        """``GET /portal/auth?app_id=..&redirect_uri=..&state=..``: the consent page."""
        with self._lock:
            try:
                app, redirect_uri, state = self._consent_request(params)
            except Rejected as exc:
                return PortalReply(400, error_html(exc.message))
            advertisers = [(a, self._advertisers[a].name) for a in app.advertiser_ids]
        return PortalReply(
            200,
            consent_html(
                app_id=app.app_id,
                app_name=app.name,
                redirect_uri=redirect_uri,
                state=state,
                advertisers=advertisers,
                scopes=app.scopes,
            ),
        )

    def consent_decision(self, form: Mapping[str, str]) -> PortalReply:
        """``POST /portal/auth`` (a button of the consent page): redirect to the app.

        Approve: ``redirect_uri?auth_code=..&state=..``. Deny:
        ``redirect_uri?error=access_denied&error_description=..&state=..`` (RFC 6749's
        form; TikTok does not document its own).
        """
        with self._lock:
            try:
                app, redirect_uri, state = self._consent_request(form)
            except Rejected as exc:
                return PortalReply(400, error_html(exc.message))
            decision = form.get("decision")
            query: dict[str, str]
            if decision == "approve":
                code = self._new_credential("code", app.app_id)
                self._auth_codes[code] = _AuthCode(app.app_id, issued_at=self._clock())
                query = {"auth_code": code}
            elif decision == "deny":
                query = {
                    "error": "access_denied",
                    "error_description": "The user denied the authorization",
                }
            else:
                return PortalReply(400, error_html("decision must be approve or deny"))
        if state:
            query["state"] = state
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return PortalReply(302, location=redirect_uri + separator + urlencode(query))

    def _consent_request(self, params: Mapping[str, str]) -> tuple[_App, str, str]:
        app = self._apps.get(params.get("app_id", ""))
        if app is None:
            raise Rejected(40101, "Unknown app_id: this app is not registered")
        redirect_uri = params.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Rejected(40002, "redirect_uri must be an http(s) URL")
        return app, redirect_uri, params.get("state", "")

    # --------------------------------------- oauth2/ endpoints (the caller holds the lock)

    def _new_credential(self, kind: str, app_id: str) -> str:
        """A new token, code or refresh token: 40 hex characters, like TikTok's."""
        self._oauth_counter += 1
        seed = f"{kind}:{app_id}:{self._oauth_counter}".encode()
        return hashlib.sha256(seed).hexdigest()[:40]

    def _app_of(self, values: Mapping[str, Any]) -> _App:
        app_id, secret = values.get("app_id"), values.get("secret")
        app = self._apps.get(str(app_id)) if isinstance(app_id, str | int) else None
        if (
            app is None
            or not isinstance(secret, str)
            or not hmac.compare_digest(secret.encode(), app.secret.encode())
        ):
            raise Rejected(40101, "The app_id or secret is invalid")
        return app

    def _issue_token(
        self, app: _App, advertiser_ids: Sequence[str], scopes: Iterable[int]
    ) -> dict[str, Any]:
        token = self._new_credential("access", app.app_id)
        user_id = self._new_user_id()
        granted = sorted(scopes)
        self._tokens[token] = Grant(
            advertiser_ids=tuple(advertiser_ids),
            scopes=frozenset(granted),
            user_id=user_id,
            app_id=app.app_id,
        )
        self._issued.setdefault(app.app_id, []).append(token)
        data: dict[str, Any] = {
            "access_token": token,
            "scope": granted,
            "advertiser_ids": list(advertiser_ids),
        }
        if app.issue_refresh_token:
            refresh = self._new_credential("refresh", app.app_id)
            self._refresh_tokens[refresh] = token
            data["refresh_token"] = refresh
            data["expires_in"] = 86400
        return data

    def _oauth_access_token(self, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        app = self._app_of(body)
        code = body.get("auth_code")
        entry = self._auth_codes.get(code) if isinstance(code, str) else None
        if entry is None or entry.app_id != app.app_id:
            raise Rejected(40110, "The auth_code is invalid")
        if entry.used:
            raise Rejected(40110, "The auth_code has already been used")
        if self._clock() - entry.issued_at >= AUTH_CODE_SECONDS:
            raise Rejected(40110, "The auth_code has expired")
        entry.used = True
        return self._issue_token(app, app.advertiser_ids, app.scopes)

    def _oauth_refresh_token(self, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        app = self._app_of(body)
        if body.get("grant_type") != "refresh_token":
            raise bad("grant_type must be refresh_token")
        refresh = body.get("refresh_token")
        old = self._refresh_tokens.get(refresh) if isinstance(refresh, str) else None
        grant = self._tokens.get(old) if old is not None else None
        if grant is None or grant.app_id != app.app_id or grant.revoked:
            raise Rejected(40107, "The refresh_token is invalid")
        del self._refresh_tokens[str(refresh)]
        grant.revoked = True  # the renewed token replaces it
        return self._issue_token(app, grant.advertiser_ids, grant.scopes)

    def _oauth_revoke_token(self, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        app = self._app_of(body)
        token = body.get("access_token")
        grant = self._tokens.get(token) if isinstance(token, str) else None
        if grant is None or grant.app_id != app.app_id:
            raise Rejected(40105, "Access token is invalid")
        grant.revoked = True
        for refresh in [r for r, t in self._refresh_tokens.items() if t == token]:
            del self._refresh_tokens[refresh]
        return {}

    def _oauth_advertisers(self, request: ApiRequest) -> dict[str, Any]:
        app = self._app_of(request.params)
        has_token = any(name.lower() == "access-token" for name in request.headers)
        ids = self._authenticate(request.headers).advertiser_ids if has_token else None
        return {
            "list": [
                {"advertiser_id": a, "advertiser_name": self._advertisers[a].name}
                for a in (ids if ids is not None else app.advertiser_ids)
            ]
        }
