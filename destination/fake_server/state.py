"""An in-process fake of the parts of TikTok's Marketing API this destination uses.

``FakeTikTok`` implements the ``Backend`` protocol (``send(request) -> response``). It
checks requests the way TikTok does, answers with TikTok's envelope
``{"code", "message", "request_id", "data"}`` (HTTP 200 for API-level errors) and keeps
audiences and their members, so tests can assert what TikTok would hold.

Everything is deterministic: audience ids, request ids and create times come from
counters, so golden tests stay stable. A rejected request changes nothing.

The OAuth side (``add_app``) plays TikTok's advertiser authorization: the consent page
(``consent_page`` / ``consent_decision``, served at ``/portal/auth`` over HTTP) redirects
with a single-use ``auth_code`` that expires after an hour by ``clock``;
``oauth2/access_token/`` exchanges it (with the app secret) for a token of the app's
advertisers and scopes; ``oauth2/advertiser/get/``, ``oauth2/revoke_token/`` and
``oauth2/refresh_token/`` (only for apps set to issue refresh tokens) follow. Revoked
tokens answer 40105, expired ones (``expire_token``) 40102.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, TypeGuard
from urllib.parse import urlencode, urlsplit

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server.faults import FakeConnectionDrop, FaultPlan
from destination.fake_server.portal import PortalReply, consent_html, error_html

__all__ = ["AUTH_CODE_SECONDS", "ID_TYPES", "FakeAudience", "FakeTikTok", "PortalReply"]

#: The identifier types ``segment/mapping/`` accepts in ``id_schema``.
ID_TYPES: tuple[str, ...] = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "AAID_SHA256",
    "IDFA_MD5",
    "AAID_MD5",
)

SCOPE_READ_AUDIENCES = 30
SCOPE_WRITE_AUDIENCES = 31
SCOPE_SHARE_AUDIENCES = 32

#: How long an authorization code can be exchanged (TikTok: one hour, single use).
AUTH_CODE_SECONDS = 3600.0

MAX_NAME_LENGTH = 70
MAX_PAGE_SIZE = 100
MAX_GET_IDS = 100

_FIRST_AUDIENCE_ID = 1_800_000_000_000_000_000
_FIRST_USER_ID = 7_000_000_000_000_000_000
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_HEX = {64: re.compile(r"[0-9a-f]{64}"), 32: re.compile(r"[0-9a-f]{32}")}
# an id type -> the length of its lowercase hex ids and their pattern
_ID_PATTERN = {
    kind: (32, _HEX[32]) if kind.endswith("_MD5") else (64, _HEX[64]) for kind in ID_TYPES
}
_MAPPING_FIELDS = ("advertiser_ids", "action", "id_schema", "batch_data")

_DEFAULT_MESSAGES = {
    40016: "Too many requests: the app's rate limit was reached",
    40100: "Too many requests: the app's rate limit was reached",
    40133: "Too many requests: the advertiser's QPS limit was reached",
    40202: "Write conflict, please retry",
    50000: "System error",
    50002: "System error",
    51305: "System busy, please retry",
    60001: "System maintenance, please retry later",
}


@dataclass(frozen=True)
class FakeAudience:
    """A snapshot of one audience: ``members`` maps id type to the hashes it holds."""

    audience_id: str
    advertiser_id: str
    name: str
    members: Mapping[str, frozenset[str]] = field(hash=False)
    deleted: bool = False


@dataclass
class _Audience:
    audience_id: str
    advertiser_id: str
    name: str
    created_at: float
    create_time: str
    members: dict[str, set[str]] = field(default_factory=dict)
    deleted: bool = False

    def snapshot(self) -> FakeAudience:
        frozen = {kind: frozenset(hashes) for kind, hashes in self.members.items()}
        return FakeAudience(
            audience_id=self.audience_id,
            advertiser_id=self.advertiser_id,
            name=self.name,
            members=MappingProxyType(frozen),
            deleted=self.deleted,
        )

    def cover_num(self) -> int:
        return sum(len(hashes) for hashes in self.members.values())

    def details(self) -> dict[str, Any]:
        created = datetime.strptime(self.create_time, _TIME_FORMAT).replace(tzinfo=UTC)
        return {
            "audience_id": self.audience_id,
            "name": self.name,
            "type": "Partner",
            "calculate_type": "MULTIPLE_TYPES",
            "cover_num": self.cover_num(),
            "is_valid": True,
            "is_expiring": False,
            "is_creator": True,
            "shared": False,
            "owner_id": self.advertiser_id,
            "create_time": self.create_time,
            "expired_time": (created + timedelta(days=365)).strftime(_TIME_FORMAT),
        }


@dataclass(frozen=True)
class _Advertiser:
    advertiser_id: str
    name: str
    business_center_id: str


@dataclass
class _Token:
    advertiser_ids: tuple[str, ...]
    scopes: frozenset[int]
    user_id: str
    revoked: bool = False
    expired: bool = False
    app_id: str | None = None  # set for tokens issued through the OAuth flow


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


@dataclass
class _ScriptedFailure:
    code: int
    http_status: int
    message: str
    remaining: int
    path: str | None


@dataclass
class _Hold:
    path: str
    count: int
    arrived: threading.Event
    released: threading.Event = field(default_factory=threading.Event)
    process: bool = True


class _Partial(Exception):
    """The request was carried out except for some rows: answer 20001 with ``data``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        super().__init__("partial success")


class _Rejected(Exception):
    """Raised inside request handling; becomes an error envelope."""

    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


def _bad(message: str) -> _Rejected:
    return _Rejected(40002, message)


def _short(value: object) -> str:
    """Describe a client-supplied value for an error message, briefly."""
    return _clip(repr(value))


def _nonempty_strings(value: object) -> TypeGuard[list[str]]:
    """Whether ``value`` is a non-empty list of non-empty strings."""
    if not isinstance(value, list) or not value:
        return False
    for item in value:  # noqa: SIM110 (all() over a generator: twice the cost, per entry)
        if not isinstance(item, str) or not item:
            return False
    return True


def _clip(text: str) -> str:
    """A client-supplied id, shortened for an error message."""
    return text if len(text) <= 40 else text[:37] + "..."


def _normalize_path(path: str) -> str:
    return path.strip("/")


def _html_page(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        f"<html><head><title>{status} {phrase}</title></head>"
        f"<body><center><h1>{status} {phrase}</h1></center></body></html>"
    )


def _envelope(
    request_id: str,
    code: int = 0,
    message: str = "OK",
    data: Mapping[str, Any] | None = None,
    http_status: int = 200,
) -> ApiResponse:
    body = {
        "code": code,
        "message": message,
        "request_id": request_id,
        "data": dict(data) if data is not None else {},
    }
    return ApiResponse(status=http_status, body=body, text=json.dumps(body)[:500])


_Handler = Callable[[_Token, ApiRequest], dict[str, Any]]


class FakeTikTok:
    """A fake TikTok Marketing API, in-process and thread-safe (one lock).

    Set it up with ``add_advertiser`` and ``add_token`` (advertisers first), then hand it
    to the code under test as its ``Backend``. ``fail_next`` scripts failures.

    ``fresh_audience_seconds`` > 0 makes writes to an audience created through the API
    less than that many seconds ago (per ``clock``) fail with 40002, as TikTok does for a
    minute or two after creation.

    ``keep_requests`` bounds what ``requests``, ``received_at`` and ``accepted`` hold to
    the latest that many (None, the default, keeps all of them: tests read them). A server
    that runs for long, such as ``fake-server`` or the benchmark's, sets it: kept bodies
    grow without end (1.4 GB after a million events), and the garbage collector's passes
    over them took half the fake's CPU.
    """

    def __init__(
        self,
        max_batch_users: int = 10_000,
        max_audiences_per_advertiser: int = 400,
        clock: Callable[[], float] = time.monotonic,
        fresh_audience_seconds: float = 0.0,
        keep_requests: int | None = None,
    ) -> None:
        if max_batch_users < 1:
            raise ValueError("max_batch_users must be at least 1")
        if max_audiences_per_advertiser < 0:
            raise ValueError("max_audiences_per_advertiser must not be negative")
        self.max_batch_users = max_batch_users
        self.max_audiences_per_advertiser = max_audiences_per_advertiser
        self.fresh_audience_seconds = fresh_audience_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._advertisers: dict[str, _Advertiser] = {}
        self._tokens: dict[str, _Token] = {}
        self._audiences: dict[str, _Audience] = {}
        if keep_requests is not None and keep_requests < 0:
            raise ValueError("keep_requests must not be negative")
        self._requests: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._received_at: deque[float] = deque(maxlen=keep_requests)
        self._accepted: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._failures: list[_ScriptedFailure] = []
        self._faults: FaultPlan | None = None
        self._hold: _Hold | None = None
        self._refused_ids: frozenset[str] = frozenset()
        self._audience_counter = 0
        self._request_counter = 0
        self._user_counter = 0
        self._apps: dict[str, _App] = {}
        self._auth_codes: dict[str, _AuthCode] = {}
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> the access token it renews
        self._issued: dict[str, list[str]] = {}  # app id -> access tokens issued, in order
        self._oauth_counter = 0
        # Endpoints authenticated by the app's id and secret rather than an access token.
        self._app_routes: dict[str, dict[str, Callable[[ApiRequest], dict[str, Any]]]] = {
            "oauth2/access_token": {"POST": self._oauth_access_token},
            "oauth2/refresh_token": {"POST": self._oauth_refresh_token},
            "oauth2/revoke_token": {"POST": self._oauth_revoke_token},
            "oauth2/advertiser/get": {"GET": self._oauth_advertisers},
        }
        self._routes: dict[str, dict[str, tuple[_Handler, int | None]]] = {
            "segment/audience": {"POST": (self._segment_audience, SCOPE_WRITE_AUDIENCES)},
            "segment/mapping": {"POST": (self._segment_mapping, SCOPE_WRITE_AUDIENCES)},
            "dmp/custom_audience/list": {"GET": (self._audience_list, SCOPE_READ_AUDIENCES)},
            "dmp/custom_audience/get": {"GET": (self._audience_get, SCOPE_READ_AUDIENCES)},
            "user/info": {"GET": (self._user_info, None)},
        }

    def __repr__(self) -> str:
        return (
            f"FakeTikTok(advertisers={len(self._advertisers)}, "
            f"audiences={len(self._audiences)}, requests={len(self._requests)})"
        )

    # ----------------------------------------------------------------- test set-up

    def add_advertiser(
        self, advertiser_id: str, name: str = "Fake advertiser", business_center_id: str = "bc-1"
    ) -> None:
        """Register an advertiser account (in the given Business Center)."""
        if not advertiser_id:
            raise ValueError("advertiser_id must be a non-empty string")
        with self._lock:
            if advertiser_id in self._advertisers:
                raise ValueError(f"advertiser {advertiser_id} already exists")
            self._advertisers[advertiser_id] = _Advertiser(advertiser_id, name, business_center_id)

    def add_token(
        self,
        token: str,
        advertiser_ids: Sequence[str],
        scopes: Sequence[int] = (
            SCOPE_READ_AUDIENCES,
            SCOPE_WRITE_AUDIENCES,
            SCOPE_SHARE_AUDIENCES,
        ),
    ) -> None:
        """Register an access token authorized for ``advertiser_ids`` (added before).

        Adding a token again replaces its grant (as re-authorizing would).
        """
        if not token or token != token.strip() or any(ch.isspace() for ch in token):
            raise ValueError("a token must be a non-empty string without whitespace")
        if isinstance(advertiser_ids, str):
            raise TypeError("advertiser_ids must be a sequence of ids, not one string")
        with self._lock:
            self._check_known(advertiser_ids)
            self._user_counter += 1
            self._tokens[token] = _Token(
                advertiser_ids=tuple(advertiser_ids),
                scopes=frozenset(scopes),
                user_id=str(_FIRST_USER_ID + self._user_counter),
            )

    def revoke_token(self, token: str) -> None:
        """Make a token invalid (40105 from then on). Revoking twice is harmless."""
        with self._lock:
            self._added_token(token).revoked = True

    def expire_token(self, token: str) -> None:
        """Make a token expired (40102 from then on), as a short-lived token would be."""
        with self._lock:
            self._added_token(token).expired = True

    def _check_known(self, advertiser_ids: Sequence[str]) -> None:
        unknown = [a for a in advertiser_ids if a not in self._advertisers]
        if unknown:
            raise ValueError(f"unknown advertiser(s) {unknown}: call add_advertiser first")

    def _added_token(self, token: str) -> _Token:
        grant = self._tokens.get(token)
        if grant is None:
            raise KeyError("no such token was added")  # never the token itself
        return grant

    def add_app(
        self,
        app_id: str,
        secret: str,
        advertiser_ids: Sequence[str],
        scopes: Sequence[int] = (
            SCOPE_READ_AUDIENCES,
            SCOPE_WRITE_AUDIENCES,
            SCOPE_SHARE_AUDIENCES,
        ),
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

    def add_audience(self, advertiser_id: str, name: str, *, fresh: bool = False) -> str:
        """Create a partner audience directly (no request recorded); return its id.

        The name is cut like TikTok cuts it. The per-advertiser limit is not applied.
        Seeded audiences accept writes at once unless ``fresh`` is true, in which case
        ``fresh_audience_seconds`` applies as for an audience created through the API.
        """
        with self._lock:
            if advertiser_id not in self._advertisers:
                raise ValueError(f"unknown advertiser {advertiser_id}: call add_advertiser first")
            audience = self._create_audience(advertiser_id, name)
            if not fresh:
                audience.created_at = -math.inf
            return audience.audience_id

    def fail_next(
        self,
        code: int,
        *,
        http_status: int = 200,
        message: str = "",
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``path`` if given) with a failure.

        The request is recorded but not processed. ``code`` != 0 gives TikTok's envelope
        with that code and ``http_status``. ``code`` 0 with an error ``http_status`` gives
        an HTML page (e.g. "502 Bad Gateway") and no JSON, like a proxy in front of TikTok.
        Several scripted failures are used in the order they were added.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if code == 0 and http_status < 400:
            raise ValueError("code 0 needs an error http_status (>= 400): a non-JSON reply")
        if not 100 <= http_status <= 599:
            raise ValueError("http_status must be between 100 and 599")
        text = message or _DEFAULT_MESSAGES.get(code, f"Scripted failure (code {code})")
        with self._lock:
            self._failures.append(
                _ScriptedFailure(
                    code=code,
                    http_status=http_status,
                    message=text,
                    remaining=times,
                    path=None if path is None else _normalize_path(path),
                )
            )

    def inject_faults(self, plan: FaultPlan | None) -> None:
        """Meet requests with random faults from ``plan`` (None: no more faults)."""
        with self._lock:
            self._faults = plan

    def refuse_users(self, hashes: Iterable[str]) -> None:
        """Rows holding any of these ids are left out of ``segment/mapping``, which then
        answers partial success (20001) naming them in ``data.failed_rows``."""
        with self._lock:
            self._refused_ids = frozenset(hashes)

    def hold_after(self, path: str, count: int) -> threading.Event:
        """Stop the request to ``path`` that comes after ``count`` such requests.

        That request waits, unprocessed, until ``release(process=...)``; the returned
        event is set once it has arrived. A test uses it to kill a client at a known
        point: while TikTok has not yet carried out the request.
        """
        arrived = threading.Event()
        with self._lock:
            self._hold = _Hold(_normalize_path(path), count, arrived)
        return arrived

    def release(self, *, process: bool) -> None:
        """Let the held request go on (``process``) or drop it unprocessed."""
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            hold.process = process
            hold.released.set()

    # ------------------------------------------------------------------- inspection

    def audiences(self, advertiser_id: str | None = None) -> list[FakeAudience]:
        """Snapshots of every audience (deleted ones too), in creation order."""
        with self._lock:
            return [
                audience.snapshot()
                for audience in self._audiences.values()
                if advertiser_id is None or audience.advertiser_id == advertiser_id
            ]

    def members(self, audience_id: str) -> dict[str, set[str]]:
        """A copy of an audience's members: id type -> hashes. KeyError if unknown."""
        with self._lock:
            audience = self._audiences[audience_id]
            return {kind: set(hashes) for kind, hashes in audience.members.items()}

    def issued_tokens(self, app_id: str) -> list[str]:
        """Access tokens issued to ``app_id`` through the OAuth flow, oldest first."""
        with self._lock:
            return list(self._issued.get(app_id, ()))

    def token_state(self, token: str) -> str:
        """``active``, ``revoked``, ``expired`` or ``unknown``: for tests' assertions."""
        with self._lock:
            grant = self._tokens.get(token)
            if grant is None:
                return "unknown"
            return "revoked" if grant.revoked else "expired" if grant.expired else "active"

    @property
    def requests(self) -> list[ApiRequest]:
        """Every request received (the latest ``keep_requests``), in order (a new list each
        time)."""
        with self._lock:
            return list(self._requests)

    @property
    def received_at(self) -> list[float]:
        """When each request of ``requests`` arrived (``time.monotonic()``)."""
        with self._lock:
            return list(self._received_at)

    @property
    def accepted(self) -> list[ApiRequest]:
        """The requests TikTok carried out (answered with code 0), in order."""
        with self._lock:
            return list(self._accepted)

    # ---------------------------------------------------------------------- Backend

    def send(self, request: ApiRequest) -> ApiResponse:
        """Handle one request the way TikTok would."""
        # Keep our own copy: a caller mutating its dicts later must not rewrite history.
        return self.receive(
            replace(
                request,
                params=dict(request.params),
                headers=dict(request.headers),
                json=copy.deepcopy(request.json),
            )
        )

    def receive(self, received: ApiRequest) -> ApiResponse:
        """``send`` for a request no one else holds (the HTTP server's, parsed from the
        wire): kept as it is, without a copy."""
        with self._lock:
            self._requests.append(received)
            self._received_at.append(time.monotonic())
            self._request_counter += 1
            request_id = f"20240101000000{self._request_counter:018X}"
            fault = self._faults.draw() if self._faults is not None else None
            hold = self._take_hold(received.path)
        if hold is not None:
            hold.arrived.set()
            hold.released.wait()
            if not hold.process:
                raise FakeConnectionDrop("the fake dropped the held request")
        if fault == "slow" and self._faults is not None:
            time.sleep(self._faults.slow_seconds)
        if fault == "drop_before":
            raise FakeConnectionDrop("connection closed with no reply")
        if fault is not None and fault.isdigit():
            message = _DEFAULT_MESSAGES.get(int(fault), "injected fault")
            return _envelope(request_id, int(fault), message)
        if fault is not None and fault.startswith("http_"):
            status = int(fault.removeprefix("http_"))
            return ApiResponse(status=status, body=None, text=_html_page(status))
        response = self._process(received, request_id)
        if fault == "drop_after":
            raise FakeConnectionDrop("connection closed after the request was carried out")
        return response

    def _process(self, received: ApiRequest, request_id: str) -> ApiResponse:
        with self._lock:
            failure = self._take_failure(received.path)
            if failure is not None:
                if failure.code == 0:
                    return ApiResponse(
                        status=failure.http_status, body=None, text=_html_page(failure.http_status)
                    )
                return _envelope(
                    request_id, failure.code, failure.message, http_status=failure.http_status
                )
            try:
                data = self._dispatch(received)
            except _Rejected as exc:
                return _envelope(request_id, exc.code, exc.message, http_status=exc.http_status)
            except _Partial as partial:
                self._accepted.append(received)
                return _envelope(request_id, 20001, "Partial success", data=partial.data)
            self._accepted.append(received)
            return _envelope(request_id, data=data)

    # ------------------------------------------------------------------- internals

    def _take_hold(self, path: str) -> _Hold | None:
        hold = self._hold
        if hold is None or hold.path != _normalize_path(path):
            return None
        if hold.count > 0:
            hold.count -= 1
            return None
        self._hold = None
        return hold

    def _take_failure(self, path: str) -> _ScriptedFailure | None:
        wanted = _normalize_path(path)
        for index, failure in enumerate(self._failures):
            if failure.path is None or failure.path == wanted:
                failure.remaining -= 1
                if failure.remaining == 0:
                    del self._failures[index]
                return failure
        return None

    def _dispatch(self, request: ApiRequest) -> dict[str, Any]:
        path = _normalize_path(request.path)
        app_methods = self._app_routes.get(path)
        if app_methods is not None:
            app_handler = app_methods.get(request.method.upper())
            if app_handler is None:
                raise _Rejected(40000, f"method {request.method.upper()} not allowed", 405)
            return app_handler(request)
        methods = self._routes.get(path)
        if methods is None:
            raise _Rejected(40000, "path not found", http_status=404)
        method = request.method.upper()
        if method not in methods:
            raise _Rejected(40000, f"method {method} not allowed", http_status=405)
        handler, scope = methods[method]
        grant = self._authenticate(request.headers)
        if scope is not None and scope not in grant.scopes:
            raise _Rejected(40001, f"No permission: the access token lacks scope {scope}")
        return handler(grant, request)

    def _authenticate(self, headers: Mapping[str, str]) -> _Token:
        value: object = None
        for name, header_value in headers.items():
            if name.lower() == "access-token":
                value = header_value
        if not isinstance(value, str) or not value.strip():
            raise _Rejected(40104, "Access token is null")
        grant = self._tokens.get(value)
        if grant is None or grant.revoked:
            raise _Rejected(40105, "Access token is invalid")
        if grant.expired:
            raise _Rejected(40102, "Access token has expired")
        return grant

    def _check_advertiser(self, grant: _Token, advertiser_id: str) -> _Advertiser:
        if advertiser_id not in grant.advertiser_ids or advertiser_id not in self._advertisers:
            raise _Rejected(40001, f"No permission to operate advertiser {_clip(advertiser_id)}")
        return self._advertisers[advertiser_id]

    def _create_audience(self, advertiser_id: str, name: str) -> _Audience:
        self._audience_counter += 1
        if len(name) > MAX_NAME_LENGTH:
            name = name[: MAX_NAME_LENGTH - 3] + "..."
        created = _EPOCH + timedelta(seconds=self._audience_counter)
        audience = _Audience(
            audience_id=str(_FIRST_AUDIENCE_ID + self._audience_counter),
            advertiser_id=advertiser_id,
            name=name,
            created_at=self._clock(),
            create_time=created.strftime(_TIME_FORMAT),
        )
        self._audiences[audience.audience_id] = audience
        return audience

    def _find_audience(self, audience_id: str, owners: Iterable[str]) -> _Audience:
        audience = self._audiences.get(audience_id)
        if audience is None or audience.deleted:
            raise _Rejected(40007, f"Audience {_clip(audience_id)} does not exist")
        if audience.advertiser_id not in set(owners):
            raise _Rejected(40001, f"No permission to operate audience {audience_id}")
        return audience

    def _writable_audience(self, audience_id: str, owners: Iterable[str]) -> _Audience:
        audience = self._find_audience(audience_id, owners)
        age = self._clock() - audience.created_at
        if self.fresh_audience_seconds > 0 and age < self.fresh_audience_seconds:
            raise _bad(
                f"Audience {audience_id}: audience is still being processed, "
                "try again in a minute or two"
            )
        return audience

    # -------------------------------------------------------------------- endpoints

    def _segment_audience(self, grant: _Token, request: ApiRequest) -> dict[str, Any]:
        body = _body_object(request)
        advertiser_id = _required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        action = body.get("action")
        if action == "create":
            name = body.get("custom_audience_name")
            if not isinstance(name, str) or not name.strip():
                raise _bad("custom_audience_name is required and must be a non-empty string")
            live = sum(
                1
                for audience in self._audiences.values()
                if audience.advertiser_id == advertiser_id and not audience.deleted
            )
            if live >= self.max_audiences_per_advertiser:
                raise _bad(
                    f"Advertiser {advertiser_id} has reached the limit of "
                    f"{self.max_audiences_per_advertiser} custom audiences; "
                    "delete some before creating more"
                )
            audience = self._create_audience(advertiser_id, name)
            return {"audience_id": audience.audience_id}
        if action == "delete":
            audience_id = _required_str(body, "delete_audience_id")
            audience = self._find_audience(audience_id, (advertiser_id,))
            audience.deleted = True
            return {}
        raise _bad(f"action must be one of create, delete; got {_short(action)}")

    def _segment_mapping(self, grant: _Token, request: ApiRequest) -> dict[str, Any]:
        body = _body_object(request)
        missing = [name for name in _MAPPING_FIELDS if name not in body]
        if missing:
            raise _bad(f"Missing required field(s): {', '.join(missing)}")

        advertiser_ids = body["advertiser_ids"]
        if not _nonempty_strings(advertiser_ids):
            raise _bad("advertiser_ids must be a non-empty list of strings")
        centers = {self._check_advertiser(grant, a).business_center_id for a in advertiser_ids}
        if len(centers) > 1:
            raise _bad("advertiser_ids must all belong to one Business Center")

        action = body["action"]
        if action not in ("add", "delete"):
            raise _bad(f"action must be one of add, delete; got {_short(action)}")

        id_schema = body["id_schema"]
        if not isinstance(id_schema, list) or not id_schema:
            raise _bad("id_schema must be a non-empty list")
        for index, kind in enumerate(id_schema):
            if not isinstance(kind, str) or kind not in ID_TYPES:
                raise _bad(
                    f"id_schema[{index}] is {_short(kind)}; it must be one of "
                    + ", ".join(ID_TYPES)
                )
        if len(set(id_schema)) != len(id_schema):
            raise _bad("id_schema must not list an identifier type twice")

        batch = body["batch_data"]
        if not isinstance(batch, list) or not batch:
            raise _bad("batch_data must be a non-empty list")
        if len(batch) > self.max_batch_users:
            raise _Rejected(
                40011,
                f"Too many users in one request: {len(batch)} > {self.max_batch_users}",
            )

        # Validate everything first; only then change state.
        # (a request carries thousands of entries: the per-entry checks stay lean, and
        # the error messages are built only for the entry that fails)
        changes: list[tuple[int, _Audience, str, str]] = []
        refused_rows: set[int] = set()
        refused_ids = self._refused_ids
        checked: dict[str, _Audience] = {}
        patterns = [(kind, *_ID_PATTERN[kind]) for kind in id_schema]
        for row_index, row in enumerate(batch):
            if not isinstance(row, list):
                raise _bad(f"batch_data[{row_index}] must be a list")
            if len(row) != len(id_schema):
                raise _bad(
                    f"batch_data[{row_index}] has {len(row)} entries "
                    f"but id_schema has {len(id_schema)}"
                )
            filled = 0
            for slot, entry in enumerate(row):
                if not isinstance(entry, dict):
                    raise _bad(f"batch_data[{row_index}][{slot}] must be an object")
                if not entry:
                    continue
                kind, length, pattern = patterns[slot]
                hashed = entry.get("id")
                # Never echo the value: a caller that forgot to hash would leak PII.
                if not isinstance(hashed, str) or not pattern.fullmatch(hashed):
                    raise _bad(
                        f"batch_data[{row_index}][{slot}].id must be {length} lowercase hex "
                        f"characters ({kind})"
                    )
                audience_ids = entry.get("audience_ids")
                if not _nonempty_strings(audience_ids):
                    raise _bad(
                        f"batch_data[{row_index}][{slot}].audience_ids must be a non-empty "
                        "list of strings"
                    )
                for audience_id in audience_ids:
                    audience = checked.get(audience_id)
                    if audience is None:
                        audience = self._writable_audience(audience_id, advertiser_ids)
                        checked[audience_id] = audience
                    changes.append((row_index, audience, kind, hashed))
                if refused_ids and hashed in refused_ids:
                    refused_rows.add(row_index)
                filled += 1
            if not filled:
                raise _bad(f"batch_data[{row_index}] has no identifier: every entry is {{}}")

        for row_index, audience, kind, hashed in changes:
            if row_index in refused_rows:
                continue
            if action == "add":
                audience.members.setdefault(kind, set()).add(hashed)
            else:
                hashes = audience.members.get(kind)
                if hashes is not None:
                    hashes.discard(hashed)
                    if not hashes:
                        del audience.members[kind]
        if refused_rows:
            failed = [
                {"index": i, "message": "user refused by the fake"} for i in sorted(refused_rows)
            ]
            raise _Partial({"failed_rows": failed})
        return {}

    def _audience_list(self, grant: _Token, request: ApiRequest) -> dict[str, Any]:
        advertiser_id = _required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        page = _int_param(request, "page", default=1, maximum=None)
        page_size = _int_param(request, "page_size", default=10, maximum=MAX_PAGE_SIZE)
        owned = [
            audience
            for audience in self._audiences.values()
            if audience.advertiser_id == advertiser_id and not audience.deleted
        ]
        start = (page - 1) * page_size
        return {
            "list": [audience.details() for audience in owned[start : start + page_size]],
            "page_info": {
                "page": page,
                "page_size": page_size,
                "total_number": len(owned),
                "total_page": math.ceil(len(owned) / page_size),
            },
        }

    def _audience_get(self, grant: _Token, request: ApiRequest) -> dict[str, Any]:
        advertiser_id = _required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        raw = _required_param(request, "custom_audience_ids")
        try:
            ids = json.loads(raw)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(a, str) and a for a in ids):
            raise _bad('custom_audience_ids must be a JSON-encoded list of strings, e.g. ["123"]')
        if not 1 <= len(ids) <= MAX_GET_IDS:
            raise _bad(f"custom_audience_ids must hold 1 to {MAX_GET_IDS} ids, got {len(ids)}")
        found = [self._find_audience(audience_id, (advertiser_id,)) for audience_id in ids]
        return {
            "list": [
                {"audience_details": audience.details(), "audience_history": []}
                for audience in found
            ]
        }

    def _user_info(self, grant: _Token, request: ApiRequest) -> dict[str, Any]:
        del request
        return {
            "display_name": "fake user",
            "email": "fake@example.invalid",
            "id": grant.user_id,
        }

    # ------------------------------------------------------------- OAuth: consent page

    def consent_page(self, params: Mapping[str, str]) -> PortalReply:
        """``GET /portal/auth?app_id=..&redirect_uri=..&state=..``: the consent page."""
        with self._lock:
            try:
                app, redirect_uri, state = self._consent_request(params)
            except _Rejected as exc:
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
            except _Rejected as exc:
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
            raise _Rejected(40101, "Unknown app_id: this app is not registered")
        redirect_uri = params.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Rejected(40002, "redirect_uri must be an http(s) URL")
        return app, redirect_uri, params.get("state", "")

    # ------------------------------------------------------------ OAuth: endpoints

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
            raise _Rejected(40101, "The app_id or secret is invalid")
        return app

    def _issue_token(
        self, app: _App, advertiser_ids: Sequence[str], scopes: Iterable[int]
    ) -> dict[str, Any]:
        token = self._new_credential("access", app.app_id)
        self._user_counter += 1
        granted = sorted(scopes)
        self._tokens[token] = _Token(
            advertiser_ids=tuple(advertiser_ids),
            scopes=frozenset(granted),
            user_id=str(_FIRST_USER_ID + self._user_counter),
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
        body = _body_object(request)
        app = self._app_of(body)
        code = body.get("auth_code")
        entry = self._auth_codes.get(code) if isinstance(code, str) else None
        if entry is None or entry.app_id != app.app_id:
            raise _Rejected(40110, "The auth_code is invalid")
        if entry.used:
            raise _Rejected(40110, "The auth_code has already been used")
        if self._clock() - entry.issued_at >= AUTH_CODE_SECONDS:
            raise _Rejected(40110, "The auth_code has expired")
        entry.used = True
        return self._issue_token(app, app.advertiser_ids, app.scopes)

    def _oauth_refresh_token(self, request: ApiRequest) -> dict[str, Any]:
        body = _body_object(request)
        app = self._app_of(body)
        if body.get("grant_type") != "refresh_token":
            raise _bad("grant_type must be refresh_token")
        refresh = body.get("refresh_token")
        old = self._refresh_tokens.get(refresh) if isinstance(refresh, str) else None
        grant = self._tokens.get(old) if old is not None else None
        if grant is None or grant.app_id != app.app_id or grant.revoked:
            raise _Rejected(40107, "The refresh_token is invalid")
        del self._refresh_tokens[str(refresh)]
        grant.revoked = True  # the renewed token replaces it
        return self._issue_token(app, grant.advertiser_ids, grant.scopes)

    def _oauth_revoke_token(self, request: ApiRequest) -> dict[str, Any]:
        body = _body_object(request)
        app = self._app_of(body)
        token = body.get("access_token")
        grant = self._tokens.get(token) if isinstance(token, str) else None
        if grant is None or grant.app_id != app.app_id:
            raise _Rejected(40105, "Access token is invalid")
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


def _body_object(request: ApiRequest) -> dict[str, Any]:
    body = request.json
    if not isinstance(body, dict):
        raise _bad("Invalid JSON body: expected a JSON object")
    return body


def _required_str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} is required and must be a non-empty string")
    return value


def _required_param(request: ApiRequest, name: str) -> str:
    value = request.params.get(name)
    if value is None or str(value) == "":
        raise _bad(f"{name} is required")
    return str(value)


def _int_param(request: ApiRequest, name: str, *, default: int, maximum: int | None) -> int:
    raw = request.params.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if value < 1 or (maximum is not None and value > maximum):
        limit = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise _bad(f"{name} must be {limit}, got {value}")
    return value
