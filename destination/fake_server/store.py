"""What the fake TikTok holds, shared by all its parts: accounts, tokens, audiences, requests.

``FakeStore`` is the base of every part of ``FakeTikTok`` (the audience and DMP APIs, OAuth
and the consent portal, the fault controls): it owns the one lock, the clock, the
advertisers and their Business Centers, the access tokens and what each allows, the
audiences (their type, owner, shares, rule or lookalike spec, members and size), the ad
groups with the audiences they include and exclude, the uploaded customer files, and the
log of requests received and carried out. Its public methods are the set-up a test does
before handing the fake to the code under test (``add_advertiser``, ``add_token``,
``add_audience``, ``add_adgroup``, ``set_target_size``, ...) and what a test reads
afterwards (``audiences``, ``members``, ``cover_num``, ``adgroup_targeting``,
``requests``, ...).

Sizes grow on the store's clock, as TikTok's audiences take 24 to 48 hours to fill: an
audience other than a partner one holds ``target * min(1, elapsed / fill)`` users, its
``fill`` between 24 and 48 hours and fixed by its id. A partner audience holds its members
at once (they are streamed to it), as before.

Everything is deterministic: audience, ad group and user ids, request ids, create times,
fill times and default targets come from counters and ids, so golden tests stay stable.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from destination.backends import ApiRequest
from destination.fake_server.checks import Rejected

__all__ = [
    "ALL_SCOPES",
    "APP_ACTIVITY",
    "CUSTOMER_FILE",
    "ENGAGEMENT",
    "LOOKALIKE",
    "PARTNER",
    "SCOPE_READ_AUDIENCES",
    "SCOPE_SHARE_AUDIENCES",
    "SCOPE_WRITE_AUDIENCES",
    "AdGroup",
    "Advertiser",
    "Audience",
    "FakeAudience",
    "FakeStore",
    "Grant",
    "Person",
    "UploadedFile",
]

SCOPE_READ_AUDIENCES = 30
SCOPE_WRITE_AUDIENCES = 31
SCOPE_SHARE_AUDIENCES = 32
#: What a token or an app is granted unless told otherwise.
ALL_SCOPES = (SCOPE_READ_AUDIENCES, SCOPE_WRITE_AUDIENCES, SCOPE_SHARE_AUDIENCES)

MAX_NAME_LENGTH = 70

#: Audience types, as ``dmp/custom_audience/get`` names them.
PARTNER = "Partner"
CUSTOMER_FILE = "Customer File"
ENGAGEMENT = "Engagement"
APP_ACTIVITY = "App Activity"
LOOKALIKE = "Lookalike"

#: Matched users before an audience is valid (can target an ad group).
MIN_VALID_SIZE = 1000
#: How long an audience takes to fill, at least and at most (seed 000: 24-48 hours).
FILL_SECONDS = (24 * 3600, 48 * 3600)

_FIRST_AUDIENCE_ID = 1_800_000_000_000_000_000
_FIRST_ADGROUP_ID = 1_790_000_000_000_000_000
_FIRST_USER_ID = 7_000_000_000_000_000_000
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: One person of a customer file: the (id type, hash) pairs of their row.
Person = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class FakeAudience:
    """A snapshot of one audience: ``members`` maps id type to the hashes it holds."""

    audience_id: str
    advertiser_id: str
    name: str
    members: Mapping[str, frozenset[str]] = field(hash=False)
    deleted: bool = False
    type: str = PARTNER
    shared_with: frozenset[str] = frozenset()


@dataclass
class Audience:
    """An audience as the fake keeps it (``FakeAudience`` is what tests are given).

    ``advertiser_id`` is its owner; ``shared_with`` the advertisers it is shared with, in
    the order they were added. ``target`` is the size it grows to over ``fill_seconds``
    from ``created_at`` (a partner audience's size is its members instead). A customer
    file audience keeps its ``people`` (``members`` then holds their ids, for tests).
    """

    audience_id: str
    advertiser_id: str
    name: str
    created_at: float
    create_time: str
    members: dict[str, set[str]] = field(default_factory=dict)
    deleted: bool = False
    type: str = PARTNER
    shared_with: dict[str, None] = field(default_factory=dict)
    rule: dict[str, Any] | None = None
    lookalike_spec: dict[str, Any] | None = None
    is_auto_refresh: bool = False
    target: int = 0
    people: set[Person] = field(default_factory=set)
    last_replace_at: float | None = None

    def snapshot(self) -> FakeAudience:
        frozen = {kind: frozenset(hashes) for kind, hashes in self.members.items()}
        return FakeAudience(
            audience_id=self.audience_id,
            advertiser_id=self.advertiser_id,
            name=self.name,
            members=MappingProxyType(frozen),
            deleted=self.deleted,
            type=self.type,
            shared_with=frozenset(self.shared_with),
        )

    @property
    def fill_seconds(self) -> int:
        """How long it takes to reach ``target``: 24 to 48 hours, fixed by the id."""
        low, high = FILL_SECONDS
        return low + int(self.audience_id) % (high - low + 1)

    def cover_num(self, now: float) -> int:
        """Its size at ``now``: the members of a partner audience, else the share of
        ``target`` that ``fill_seconds`` has filled since it was created."""
        if self.type == PARTNER:
            return sum(len(hashes) for hashes in self.members.values())
        filled = min(1.0, max(0.0, now - self.created_at) / self.fill_seconds)
        return math.floor(self.target * filled)

    def is_valid(self, now: float) -> bool:
        """Whether it can target an ad group: at least 1,000 users (a partner audience is
        valid at once, as the segment API's audiences are)."""
        return self.type == PARTNER or self.cover_num(now) >= MIN_VALID_SIZE

    def visible_to(self, advertiser_id: str) -> bool:
        """Whether the advertiser owns it or it is shared with the advertiser."""
        return advertiser_id == self.advertiser_id or advertiser_id in self.shared_with

    def set_people(self, people: set[Person]) -> None:
        """A customer file audience's people, its members and target (all match)."""
        self.people = people
        self.target = len(people)
        members: dict[str, set[str]] = {}
        for person in people:
            for kind, hashed in person:
                members.setdefault(kind, set()).add(hashed)
        self.members = members

    def details(self, now: float, viewer: str) -> dict[str, Any]:
        """The audience as ``dmp/custom_audience/list`` and ``get`` describe it to
        ``viewer`` (its owner, or an advertiser it is shared with)."""
        created = datetime.strptime(self.create_time, _TIME_FORMAT).replace(tzinfo=UTC)
        return {
            "audience_id": self.audience_id,
            "name": self.name,
            "type": self.type,
            "calculate_type": "MULTIPLE_TYPES" if self.type in (PARTNER, CUSTOMER_FILE) else None,
            "cover_num": self.cover_num(now),
            "is_valid": self.is_valid(now),
            "is_expiring": False,
            "is_creator": viewer == self.advertiser_id,
            "shared": bool(self.shared_with),
            "owner_id": self.advertiser_id,
            "is_auto_refresh": self.is_auto_refresh,
            "rule": self.rule,
            "lookalike_spec": self.lookalike_spec,
            "create_time": self.create_time,
            "expired_time": (created + timedelta(days=365)).strftime(_TIME_FORMAT),
        }


@dataclass
class AdGroup:
    """An ad group and the audiences it targets (included) and leaves out (excluded)."""

    adgroup_id: str
    advertiser_id: str
    name: str
    included: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def uses(self, audience_id: str) -> bool:
        return audience_id in self.included or audience_id in self.excluded

    def drop(self, audience_id: str) -> None:
        """Disconnect the audience, included or excluded."""
        self.included = [a for a in self.included if a != audience_id]
        self.excluded = [a for a in self.excluded if a != audience_id]

    def targeting(self) -> dict[str, list[str]]:
        return {"audience_ids": list(self.included), "excluded_audience_ids": list(self.excluded)}


@dataclass(frozen=True)
class UploadedFile:
    """A customer file ``dmp/custom_audience/file/upload`` took: its people, for the
    advertiser that uploaded it."""

    advertiser_id: str
    people: frozenset[Person]


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


def segment_name(name: str) -> str:
    """The name the segment API keeps: over 70 characters, cut to 67 and "..."."""
    return name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 3] + "..."


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
        self._adgroups: dict[str, AdGroup] = {}
        self._files: dict[str, UploadedFile] = {}
        if keep_requests is not None and keep_requests < 0:
            raise ValueError("keep_requests must not be negative")
        self._requests: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._received_at: deque[float] = deque(maxlen=keep_requests)
        self._accepted: deque[ApiRequest] = deque(maxlen=keep_requests)
        self._audience_counter = 0
        self._adgroup_counter = 0
        self._file_counter = 0
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
            audience = self._create_audience(advertiser_id, segment_name(name))
            if not fresh:
                audience.created_at = -math.inf
            return audience.audience_id

    def add_adgroup(self, advertiser_id: str, name: str = "Fake ad group") -> str:
        """Create an ad group of the advertiser, targeting no audience; return its id."""
        with self._lock:
            self._check_known((advertiser_id,))
            self._adgroup_counter += 1
            adgroup_id = str(_FIRST_ADGROUP_ID + self._adgroup_counter)
            self._adgroups[adgroup_id] = AdGroup(adgroup_id, advertiser_id, name)
            return adgroup_id

    def set_target_size(self, audience_id: str, size: int) -> None:
        """Make an audience (not a partner one) grow to ``size`` users: the size TikTok
        would match for its rule or file. Its growth since creation is kept."""
        if size < 0:
            raise ValueError("size must not be negative")
        with self._lock:
            audience = self._audiences[audience_id]
            if audience.type == PARTNER:
                raise ValueError("a partner audience's size is its members: add members instead")
            audience.target = size

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

    def cover_num(self, audience_id: str) -> int:
        """An audience's size now (``cover_num``), on the store's clock. KeyError if
        unknown."""
        with self._lock:
            return self._audiences[audience_id].cover_num(self._clock())

    def adgroup_targeting(self, adgroup_id: str) -> dict[str, list[str]]:
        """An ad group's ``audience_ids`` (included) and ``excluded_audience_ids``: both
        empty when it has no audience targeting. KeyError if unknown."""
        with self._lock:
            return self._adgroups[adgroup_id].targeting()

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

    def _create_audience(self, advertiser_id: str, name: str, kind: str = PARTNER) -> Audience:
        self._audience_counter += 1
        created = _EPOCH + timedelta(seconds=self._audience_counter)
        audience = Audience(
            audience_id=str(_FIRST_AUDIENCE_ID + self._audience_counter),
            advertiser_id=advertiser_id,
            name=name,
            created_at=self._clock(),
            create_time=created.strftime(_TIME_FORMAT),
            type=kind,
        )
        self._audiences[audience.audience_id] = audience
        return audience

    def _adgroups_using(self, audience_id: str, advertiser_ids: Iterable[str]) -> list[AdGroup]:
        """The ad groups of these advertisers that include or exclude the audience."""
        owners = set(advertiser_ids)
        return [
            adgroup
            for adgroup in self._adgroups.values()
            if adgroup.advertiser_id in owners and adgroup.uses(audience_id)
        ]

    def _new_file_path(self, uploaded: UploadedFile) -> str:
        """Keep an uploaded customer file; the opaque ``file_path`` that names it."""
        self._file_counter += 1
        file_path = f"fake-dmp-file/{self._file_counter:08d}.csv"
        self._files[file_path] = uploaded
        return file_path

    def _check_known(self, advertiser_ids: Sequence[str]) -> None:
        unknown = [a for a in advertiser_ids if a not in self._advertisers]
        if unknown:
            raise ValueError(f"unknown advertiser(s) {unknown}: call add_advertiser first")

    def _added_token(self, token: str) -> Grant:
        grant = self._tokens.get(token)
        if grant is None:
            raise KeyError("no such token was added")  # never the token itself
        return grant
