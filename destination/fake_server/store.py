"""What the fake TikTok holds, shared by all its parts: accounts, tokens, audiences, requests.

``FakeStore`` is the base of every part of ``FakeTikTok`` (the audience API, OAuth and the
consent portal, the fault controls): it owns the one lock, the clock, the advertisers, the
access tokens and what each allows, the audiences with their members, and the log of
requests received and carried out. Its public methods are the set-up a test does before
handing the fake to the code under test (``add_advertiser``, ``add_token``,
``add_audience``, ...) and what a test reads afterwards (``audiences``, ``members``,
``requests``, ...).

Everything is deterministic: audience ids, user ids, request ids and create times come
from counters, so golden tests stay stable.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from destination.backends import ApiRequest
from destination.fake_server.checks import Rejected

__all__ = [
    "ALL_SCOPES",
    "SCOPE_READ_AUDIENCES",
    "SCOPE_WRITE_AUDIENCES",
    "Advertiser",
    "Audience",
    "FakeAudience",
    "FakeStore",
    "Grant",
]

SCOPE_READ_AUDIENCES = 30
SCOPE_WRITE_AUDIENCES = 31
SCOPE_SHARE_AUDIENCES = 32
#: What a token or an app is granted unless told otherwise.
ALL_SCOPES = (SCOPE_READ_AUDIENCES, SCOPE_WRITE_AUDIENCES, SCOPE_SHARE_AUDIENCES)

MAX_NAME_LENGTH = 70

_FIRST_AUDIENCE_ID = 1_800_000_000_000_000_000
_FIRST_USER_ID = 7_000_000_000_000_000_000
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class FakeAudience:
    """A snapshot of one audience: ``members`` maps id type to the hashes it holds."""

    audience_id: str
    advertiser_id: str
    name: str
    members: Mapping[str, frozenset[str]] = field(hash=False)
    deleted: bool = False


@dataclass
class Audience:
    """An audience as the fake keeps it (``FakeAudience`` is what tests are given)."""

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
        """The audience as ``dmp/custom_audience/list`` and ``get`` describe it."""
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
class Advertiser:
    advertiser_id: str
    name: str
    business_center_id: str


@dataclass
class Grant:
    """What an access token allows, and whether it still does."""

    advertiser_ids: tuple[str, ...]
    scopes: frozenset[int]
    user_id: str
    revoked: bool = False
    expired: bool = False
    app_id: str | None = None  # set for tokens issued through the OAuth flow


class FakeStore:
    """The fake's shared state behind one lock; see the module docstring.

    ``keep_requests`` bounds what ``requests``, ``received_at`` and ``accepted`` hold to
    the latest that many (None keeps all of them).
    """

    def __init__(self, *, clock: Callable[[], float], keep_requests: int | None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._advertisers: dict[str, Advertiser] = {}
        self._tokens: dict[str, Grant] = {}
        self._audiences: dict[str, Audience] = {}
        if keep_requests is not None and keep_requests < 0:
            raise ValueError("keep_requests must not be negative")
        self._requests: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._received_at: deque[float] = deque(maxlen=keep_requests)
        self._accepted: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._audience_counter = 0
        self._request_counter = 0
        self._user_counter = 0

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
            self._advertisers[advertiser_id] = Advertiser(advertiser_id, name, business_center_id)

    def add_token(
        self, token: str, advertiser_ids: Sequence[str], scopes: Sequence[int] = ALL_SCOPES
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
            user_id = self._new_user_id()
            self._tokens[token] = Grant(
                advertiser_ids=tuple(advertiser_ids), scopes=frozenset(scopes), user_id=user_id
            )

    def revoke_token(self, token: str) -> None:
        """Make a token invalid (40105 from then on). Revoking twice is harmless."""
        with self._lock:
            self._added_token(token).revoked = True

    def expire_token(self, token: str) -> None:
        """Make a token expired (40102 from then on), as a short-lived token would be."""
        with self._lock:
            self._added_token(token).expired = True

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

    # ---------------------------------------- for the parts (the caller holds the lock)

    def _log(self, received: ApiRequest) -> str:
        """Record a request as received; its TikTok-style request id."""
        self._requests.append(received)
        self._received_at.append(time.monotonic())
        self._request_counter += 1
        return f"20240101000000{self._request_counter:018X}"

    def _authenticate(self, headers: Mapping[str, str]) -> Grant:
        """The grant of the request's ``Access-Token`` header, or TikTok's refusal."""
        value: object = None
        for name, header_value in headers.items():
            if name.lower() == "access-token":
                value = header_value
        if not isinstance(value, str) or not value.strip():
            raise Rejected(40104, "Access token is null")
        grant = self._tokens.get(value)
        if grant is None or grant.revoked:
            raise Rejected(40105, "Access token is invalid")
        if grant.expired:
            raise Rejected(40102, "Access token has expired")
        return grant

    def _new_user_id(self) -> str:
        """The TikTok user behind a new token (each token gets a user of its own)."""
        self._user_counter += 1
        return str(_FIRST_USER_ID + self._user_counter)

    def _create_audience(self, advertiser_id: str, name: str) -> Audience:
        self._audience_counter += 1
        if len(name) > MAX_NAME_LENGTH:
            name = name[: MAX_NAME_LENGTH - 3] + "..."
        created = _EPOCH + timedelta(seconds=self._audience_counter)
        audience = Audience(
            audience_id=str(_FIRST_AUDIENCE_ID + self._audience_counter),
            advertiser_id=advertiser_id,
            name=name,
            created_at=self._clock(),
            create_time=created.strftime(_TIME_FORMAT),
        )
        self._audiences[audience.audience_id] = audience
        return audience

    def _check_known(self, advertiser_ids: Sequence[str]) -> None:
        unknown = [a for a in advertiser_ids if a not in self._advertisers]
        if unknown:
            raise ValueError(f"unknown advertiser(s) {unknown}: call add_advertiser first")

    def _added_token(self, token: str) -> Grant:
        grant = self._tokens.get(token)
        if grant is None:
            raise KeyError("no such token was added")  # never the token itself
        return grant
