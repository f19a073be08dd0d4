"""TikTok's advertiser authorization, on authlib's OAuth 2 client.

TikTok's flow is OAuth 2's authorization-code grant in its own dialect:

- the consent URL takes ``app_id``, ``state`` and ``redirect_uri`` (no ``client_id`` or
  ``response_type``); the redirect brings ``auth_code`` and ``state``;
- ``oauth2/access_token/`` takes a JSON body ``{app_id, secret, auth_code}`` (not a form
  with client authentication) and answers with TikTok's envelope, whose ``data`` holds
  ``access_token``, ``scope`` as a list of numbers and ``advertiser_ids``; advertiser
  tokens have no ``refresh_token`` (other tokens may);
- ``oauth2/refresh_token/`` and ``oauth2/revoke_token/`` take JSON bodies too.

authlib does the OAuth parts: the ``state`` (``generate_token``), the URL
(``add_params_to_uri``) and the client (``OAuth2Client``: the authorization-code and
refresh-token grant requests, RFC 7009 revocation, the token object). The dialect is
spoken through authlib's extension points: a client authentication method
(``tiktok_json``) turns the form authlib prepares into TikTok's JSON body, compliance
hooks unwrap the envelope through ``classify`` (the one function that reads TikTok's
replies), and the transport is the project's ``Backend`` (``_BackendSession``), so the
in-process fake works as well as HTTP.

The app secret is a ``Secret`` revealed only while a request body is built; authlib's
client never holds it. Failures become the project's errors: ``AuthenticationError``
(refused secret, code or token), ``ApiUnavailableError`` (TikTok unreachable or busy),
``PermanentError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri, url_decode, url_encode
from authlib.oauth2.client import OAuth2Client

from destination.backends import ApiRequest, ApiResponse, Backend
from destination.errors import ApiUnavailableError, PermanentError, RetryableError
from destination.settings import Secret
from destination.tiktok.api import classify

__all__ = [
    "DEFAULT_AUTH_URL",
    "Advertiser",
    "TikTokOAuth",
    "TokenGrant",
    "consent_url",
    "new_state",
]

DEFAULT_AUTH_URL = "https://business-api.tiktok.com/portal/auth"
STATE_LENGTH = 32
EXCHANGE_PATH = "oauth2/access_token/"
REFRESH_PATH = "oauth2/refresh_token/"
REVOKE_PATH = "oauth2/revoke_token/"
ADVERTISERS_PATH = "oauth2/advertiser/get/"
_AUTH_METHOD = "tiktok_json"


def new_state() -> str:
    """An unguessable ``state`` for one login (authlib's generator, system randomness)."""
    return str(generate_token(STATE_LENGTH))


def consent_url(auth_url: str, *, app_id: str, redirect_uri: str, state: str) -> str:
    """TikTok's consent page URL, in the form TikTok documents."""
    return str(
        add_params_to_uri(
            auth_url, [("app_id", app_id), ("state", state), ("redirect_uri", redirect_uri)]
        )
    )


@dataclass(frozen=True)
class TokenGrant:
    """What a token exchange or refresh gave: tokens as ``Secret``, and what they cover."""

    access_token: Secret
    advertiser_ids: tuple[str, ...]
    scopes: tuple[int, ...]
    refresh_token: Secret | None = None


@dataclass(frozen=True)
class Advertiser:
    advertiser_id: str
    name: str


class _Reply:
    """What authlib's client reads of an HTTP response, over an ``ApiResponse``."""

    def __init__(self, response: ApiResponse) -> None:
        self.response = response
        self.status_code = response.status

    def json(self) -> Any:
        return self.response.body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise PermanentError("TikTok's OAuth endpoint failed", http_status=self.status_code)


class _BackendSession:
    """The ``session`` authlib's ``OAuth2Client`` posts through, sending over a ``Backend``.

    authlib gives a path (``oauth2/access_token/``) as the URL, the form it prepared as
    ``data`` and its client authentication as ``auth``; the ``tiktok_json`` method turns
    the form into TikTok's JSON body, which is sent as an ``ApiRequest``.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def post(
        self,
        url: str,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        **_: Any,
    ) -> _Reply:
        body = url_encode(list((data or {}).items()))
        prepared_headers = dict(headers or {})
        if auth is not None:
            url, prepared_headers, body = auth.prepare("POST", url, prepared_headers, body)
        request = ApiRequest(method="POST", path=url, json=json.loads(body) if body else None)
        return _Reply(self._backend.send(request))


class TikTokOAuth:
    """One app's OAuth calls against TikTok (``backend`` decides where TikTok is)."""

    def __init__(self, backend: Backend, app_id: str, secret: Secret) -> None:
        self.app_id = app_id
        self._backend = backend
        self._secret = secret
        self._hint = (
            f"check the app id ({app_id}) and TIKTOK_APP_SECRET, then run "
            f"`tiktok-audiences auth login --app-id {app_id}` again"
        )
        client = OAuth2Client(
            _BackendSession(backend),
            client_id=app_id,
            token_endpoint_auth_method=_AUTH_METHOD,
            revocation_endpoint_auth_method=_AUTH_METHOD,
        )
        client.register_client_auth_method((_AUTH_METHOD, self._json_body))
        client.register_compliance_hook(
            "access_token_response", self._unwrap("exchange the authorization code")
        )
        client.register_compliance_hook(
            "refresh_token_response", self._unwrap("refresh the access token")
        )
        self._client = client

    def __repr__(self) -> str:
        return f"TikTokOAuth(app_id={self.app_id!r}, {self._backend!r})"

    # ----------------------------------------------------------------------- the calls

    def exchange_code(self, auth_code: str, redirect_uri: str) -> TokenGrant:
        """``oauth2/access_token/``: the consent page's code for a token."""
        return self._grant(
            lambda: self._client.fetch_token(
                EXCHANGE_PATH,
                grant_type="authorization_code",
                code=auth_code,
                redirect_uri=redirect_uri,
            )
        )

    def refresh(self, refresh_token: Secret) -> TokenGrant:
        """``oauth2/refresh_token/``: a new token for a refresh token."""
        return self._grant(
            lambda: self._client.refresh_token(REFRESH_PATH, refresh_token=refresh_token.reveal())
        )

    def revoke(self, access_token: Secret) -> None:
        """``oauth2/revoke_token/``: TikTok forgets the token."""

        def revoke() -> None:
            reply = self._client.revoke_token(
                REVOKE_PATH,
                token=access_token.reveal(),
                token_type_hint="access_token",  # noqa: S106 (a token kind)
            )
            self._classify(reply.response, "revoke the access token")

        self._guarded(revoke)

    def advertisers(self, access_token: Secret) -> list[Advertiser]:
        """``oauth2/advertiser/get/``: the advertisers the token may manage, with names."""
        request = ApiRequest(
            method="GET",
            path=ADVERTISERS_PATH,
            params={"app_id": self.app_id, "secret": self._secret.reveal()},
            headers={"Access-Token": access_token.reveal()},
        )
        data = self._guarded(
            lambda: self._classify(self._backend.send(request), "list the authorized advertisers")
        )
        found = data.get("list")
        if not isinstance(found, list):
            raise PermanentError("list the authorized advertisers: TikTok's reply has no list")
        return [
            Advertiser(str(item.get("advertiser_id", "")), str(item.get("advertiser_name", "")))
            for item in found
            if isinstance(item, dict) and item.get("advertiser_id")
        ]

    # ------------------------------------------------------------ authlib extension points

    def _json_body(
        self, client_auth: Any, method: str, uri: str, headers: dict[str, str], body: str
    ) -> tuple[str, dict[str, str], str]:
        """The ``tiktok_json`` client authentication: authlib's form as TikTok's JSON."""
        del client_auth, method
        form = dict(url_decode(body))
        payload: dict[str, str] = {"app_id": self.app_id, "secret": self._secret.reveal()}
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            payload["auth_code"] = form["code"]
        elif grant_type == "refresh_token":
            payload["refresh_token"] = form["refresh_token"]
            payload["grant_type"] = "refresh_token"
        elif "token" in form:  # RFC 7009 revocation
            payload["access_token"] = form["token"]
        else:
            raise AssertionError("authlib prepared a request TikTok has no endpoint for")
        headers = {**headers, "Content-Type": "application/json"}
        headers.pop("Content-Length", None)
        return uri, headers, json.dumps(payload)

    def _unwrap(self, what: str) -> Callable[[_Reply], _Reply]:
        """A compliance hook: TikTok's envelope to the token response authlib expects."""

        def hook(reply: _Reply) -> _Reply:
            data = self._classify(reply.response, what)
            token = data.get("access_token")
            if not isinstance(token, str) or not token:
                raise PermanentError(f"{what}: TikTok's reply has no access_token")
            scopes = _scopes(data.get("scope"))
            standard: dict[str, Any] = {
                "access_token": token,
                "token_type": "Bearer",
                "scope": " ".join(str(s) for s in scopes),
                "tiktok_scopes": scopes,
                "advertiser_ids": [str(a) for a in data.get("advertiser_ids") or []],
            }
            refresh = data.get("refresh_token")
            if isinstance(refresh, str) and refresh:
                standard["refresh_token"] = refresh
            if isinstance(data.get("expires_in"), int):
                standard["expires_in"] = data["expires_in"]
            return _Reply(ApiResponse(status=200, body=standard))

        return hook

    # ---------------------------------------------------------------------- internals

    def _grant(self, call: Callable[[], Any]) -> TokenGrant:
        token = self._guarded(call)
        refresh = token.get("refresh_token")
        return TokenGrant(
            access_token=Secret(str(token["access_token"])),
            advertiser_ids=tuple(token.get("advertiser_ids") or ()),
            scopes=tuple(token.get("tiktok_scopes") or ()),
            refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        )

    def _classify(self, response: ApiResponse, what: str) -> dict[str, Any]:
        return classify(response, what=what, reauthorize=self._hint).data

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """Run ``call``, translating what is left of transport and authlib errors."""
        try:
            return call()
        except RetryableError as exc:  # not retried here: the user is waiting
            raise ApiUnavailableError(
                f"{exc.message}; TikTok could not be reached or is busy: try again later",
                code=exc.code,
                http_status=exc.http_status,
                request_id=exc.request_id,
            ) from exc
        except AuthlibBaseError as exc:
            raise PermanentError(f"OAuth request failed: {exc.error}") from exc


def _scopes(value: Any) -> list[int]:
    """TikTok's ``scope`` (a list of numbers, maybe as strings) as sorted numbers."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        return []
    found: set[int] = set()
    for item in value:
        try:
            found.add(int(item))
        except (TypeError, ValueError):
            continue
    return sorted(found)
