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

Every call is retried the way a sync's requests are (``RetryPolicy``: transport
failures and what ``classify`` calls retryable), so that a flaky network does not undo
a consent the user just gave. TikTok's answer about the code itself is never retried:
a code works once. A reply lost on the way (TikTok may have used the code and issued a
token nobody received) makes the next attempt meet 40110; that error then says the
reply was lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri, url_decode, url_encode
from authlib.oauth2.client import OAuth2Client
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from destination.backends import ApiRequest, ApiResponse, Backend
from destination.errors import (
    AuthenticationError,
    PermanentError,
    RetryableError,
)
from destination.kit.settings import Secret
from destination.tiktok.api import RetryPolicy, classify, gave_up

__all__ = [
    "DEFAULT_AUTH_URL",
    "OAUTH_RETRY",
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
BAD_AUTH_CODE = 40110
#: A person waits at the terminal: fewer and shorter waits than a sync's.
OAUTH_RETRY = RetryPolicy(max_attempts=4, max_seconds=30.0, initial_wait=0.5, max_wait=4.0)

_T = TypeVar("_T")


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
    """One app's OAuth calls against TikTok (``backend`` decides where TikTok is).

    ``retry`` (default ``OAUTH_RETRY``) and ``sleep`` pace the retries.
    """

    def __init__(
        self,
        backend: Backend,
        app_id: str,
        secret: Secret,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app_id = app_id
        self._backend = backend
        self._secret = secret
        self._retry = retry if retry is not None else OAUTH_RETRY  # read now, not at import
        self._sleep = sleep
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
        """``oauth2/access_token/``: the consent page's code for a token.

        Retried only while no answer of TikTok's about the code has come back. If an
        attempt's reply was lost (TikTok may have carried it out and used the code) and a
        later attempt is told the code is invalid (40110), the error says so: the code is
        spent, and only a new login gets another.
        """
        lost_reply = False

        def exchange() -> Any:
            nonlocal lost_reply
            try:
                return self._client.fetch_token(
                    EXCHANGE_PATH,
                    grant_type="authorization_code",
                    code=auth_code,
                    redirect_uri=redirect_uri,
                )
            except RetryableError as exc:
                # no TikTok envelope: a transport failure or a proxy's page, after which
                # nobody knows whether TikTok carried the exchange out
                lost_reply = lost_reply or exc.code == 0
                raise

        try:
            return self._grant(self._retried(exchange))
        except AuthenticationError as exc:
            if not lost_reply or exc.code != BAD_AUTH_CODE:
                raise
            raise AuthenticationError(
                "exchange the authorization code: the reply was lost on the way, and asked "
                "again TikTok refused the code, most likely because the lost attempt used it "
                "(a code works only once); run "
                f"`tiktok-audiences auth login --app-id {self.app_id}` again",
                code=exc.code,
                http_status=exc.http_status,
                request_id=exc.request_id,
            ) from exc

    def refresh(self, refresh_token: Secret) -> TokenGrant:
        """``oauth2/refresh_token/``: a new token for a refresh token."""
        return self._grant(
            self._retried(
                lambda: self._client.refresh_token(
                    REFRESH_PATH, refresh_token=refresh_token.reveal()
                )
            )
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

        self._retried(revoke)

    def advertisers(self, access_token: Secret) -> list[Advertiser]:
        """``oauth2/advertiser/get/``: the advertisers the token may manage, with names."""
        request = ApiRequest(
            method="GET",
            path=ADVERTISERS_PATH,
            params={"app_id": self.app_id, "secret": self._secret.reveal()},
            headers={"Access-Token": access_token.reveal()},
        )
        data = self._retried(
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

    @staticmethod
    def _grant(token: Any) -> TokenGrant:
        refresh = token.get("refresh_token")
        return TokenGrant(
            access_token=Secret(str(token["access_token"])),
            advertiser_ids=tuple(token.get("advertiser_ids") or ()),
            scopes=tuple(token.get("tiktok_scopes") or ()),
            refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        )

    def _classify(self, response: ApiResponse, what: str) -> dict[str, Any]:
        return classify(response, what=what, reauthorize=self._hint).data

    def _retried(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` again as the policy says while it fails in a retryable way, and
        translate what is left of transport and authlib errors."""
        policy = self._retry
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_seconds),
            wait=policy.wait,
            sleep=self._sleep,
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        return call()
                    except AuthlibBaseError as exc:
                        raise PermanentError(f"OAuth request failed: {exc.error}") from exc
        except RetryError as exc:
            raise gave_up(
                exc, then=": TikTok could not be reached or is busy; try again later"
            ) from exc.last_attempt.exception()
        raise AssertionError("unreachable: tenacity either returns or raises")


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
