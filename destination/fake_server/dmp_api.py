"""The fake TikTok's custom audience (DMP) endpoints and its ad groups.

``DmpApi`` is the part of ``FakeTikTok`` that answers ``dmp/custom_audience/...``: ``list``,
``get``, ``delete``, ``file/upload``, ``create``, ``update``, ``rule/create``,
``lookalike/create``, ``lookalike/update``, ``share``, ``share/cancel`` and ``apply``, and
``adgroup/get``. It checks what TikTok checks and refuses with TikTok's codes (40002 for a
bad request, 40001 for a right the advertiser lacks, 40007 for what does not exist, 40011
for too many ids), a message saying why, and nothing changed:

- customer files: a header naming id types from ``EMAIL_SHA256``, ``PHONE_SHA256``,
  ``IDFA_SHA256``, ``AAID_SHA256``, then one row per person of lowercase 64-hex hashes
  (an empty cell where the person has none); ``file_signature`` must be the file's MD5;
- rule audiences: the wire format of ``rule/create`` checked against
  ``destination.tiktok.dmp.facts`` (action and event codes, the lookbacks each offers,
  at most 5 rules a rule set, 50 videos a rule, one TikTok account a rule set);
- limits: 400 audiences per advertiser on every create, a lookalike's source needs 100
  users and cannot be a lookalike, an update may not leave a file audience under 1,000
  users, one REPLACE per 24 hours, an audience an ad group uses cannot be deleted;
- the rights of seed 002: only the owner edits (update, rename), shares, stops sharing,
  or creates and refreshes lookalikes; a recipient can apply a shared audience to its ad
  groups, or delete it from its own list. Sharing stays inside one Business Center, and
  when it stops (or the owner deletes the audience) the recipient's ad groups lose it.

The ad group ids of engagement rules and the app ids of app activity rules are not
checked against anything: the fake knows no ads and no apps.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from destination.backends import ApiRequest
from destination.fake_server.audience_api import AudienceApi
from destination.fake_server.checks import (
    Rejected,
    bad,
    body_object,
    clip,
    int_param,
    nonempty_strings,
    required_param,
    required_str,
    short,
)
from destination.fake_server.store import (
    APP_ACTIVITY,
    CUSTOMER_FILE,
    ENGAGEMENT,
    LOOKALIKE,
    SCOPE_READ_AUDIENCES,
    SCOPE_SHARE_AUDIENCES,
    SCOPE_WRITE_AUDIENCES,
    AdGroup,
    Audience,
    Grant,
    Person,
    UploadedFile,
)
from destination.tiktok.dmp import facts

__all__ = ["FILE_ID_TYPES", "DmpApi"]

#: The id types a customer file's header may name.
FILE_ID_TYPES = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256")

MAX_PAGE_SIZE = 100
MAX_ADGROUP_PAGE_SIZE = 1000
MAX_GET_IDS = 100
MAX_DELETE_IDS = 100
MIN_UPDATED_SIZE = facts.MIN_TARGETABLE
#: How many times its source's size a lookalike grows to, per ``audience_size``.
LOOKALIKE_FACTORS: Mapping[str, int] = {"NARROW": 1, "BALANCED": 3, "BROAD": 10}

_HASH = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_OPERATORS = ("AND", "OR")
_UPDATE_ACTIONS = ("APPEND", "REMOVE", "REPLACE")
_LOOKALIKE_FIELDS = frozenset(
    {
        "source_audience_id",
        "audience_size",
        "include_source",
        "location_ids",
        "mobile_os",
        "placements",
    }
)


T = TypeVar("T")


def _default_target(audience_id: str) -> int:
    """What a rule audience grows to unless a test sets it: 10,000 to 100,000, fixed by
    its id."""
    return 10_000 + int(audience_id) % 90_001


class DmpApi(AudienceApi):
    """The part of ``FakeTikTok`` that answers the DMP endpoints; see the module."""

    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        read, write, share = SCOPE_READ_AUDIENCES, SCOPE_WRITE_AUDIENCES, SCOPE_SHARE_AUDIENCES
        dmp = "dmp/custom_audience/"
        self._routes.update(
            {
                dmp + "list": {"GET": (self._audience_list, read)},
                dmp + "get": {"GET": (self._audience_get, read)},
                dmp + "delete": {"POST": (self._audience_delete, write)},
                dmp + "file/upload": {"POST": (self._file_upload, write)},
                dmp + "create": {"POST": (self._file_create, write)},
                dmp + "update": {"POST": (self._file_update, write)},
                dmp + "rule/create": {"POST": (self._rule_create, write)},
                dmp + "lookalike/create": {"POST": (self._lookalike_create, write)},
                dmp + "lookalike/update": {"POST": (self._lookalike_update, write)},
                dmp + "share": {"POST": (self._share, share)},
                dmp + "share/cancel": {"POST": (self._share_cancel, share)},
                dmp + "apply": {"POST": (self._apply, write)},
                # TikTok asks for its ads scopes here; the fake knows only audience scopes
                "adgroup/get": {"GET": (self._adgroup_get, None)},
            }
        )

    # ------------------------------------------ checks (the caller holds the lock)

    def _visible(self, audience_id: str, advertiser_id: str) -> Audience:
        """A live audience the advertiser owns or that is shared with it."""
        audience = self._audiences.get(audience_id)
        if audience is None or audience.deleted:
            raise Rejected(40007, f"Audience {clip(audience_id)} does not exist")
        if not audience.visible_to(advertiser_id):
            raise Rejected(40001, f"No permission to operate audience {audience_id}")
        return audience

    def _owned(self, audience_id: str, advertiser_id: str, doing: str) -> Audience:
        """A live audience the advertiser owns; a recipient is told it cannot ``doing``."""
        audience = self._visible(audience_id, advertiser_id)
        if audience.advertiser_id != advertiser_id:
            raise Rejected(
                40001,
                f"Audience {audience_id} is shared with advertiser {advertiser_id} by its "
                f"owner {audience.advertiser_id}: a recipient can only apply it to ad "
                f"groups, not {doing}",
            )
        return audience

    def _new_name(self, body: Mapping[str, Any]) -> str:
        name = body.get("custom_audience_name")
        if not isinstance(name, str) or not name.strip():
            raise bad("custom_audience_name is required and must be a non-empty string")
        if len(name) > facts.MAX_NAME_LENGTH:
            raise bad(
                f"custom_audience_name has {len(name)} characters; "
                f"at most {facts.MAX_NAME_LENGTH} are allowed"
            )
        return name

    def _uploaded(self, body: Mapping[str, Any], advertiser_id: str) -> list[UploadedFile]:
        paths = body.get("file_paths")
        if not nonempty_strings(paths):
            raise bad("file_paths must be a non-empty list of file/upload's file_path values")
        found = []
        for index, file_path in enumerate(paths):
            uploaded = self._files.get(file_path)
            if uploaded is None or uploaded.advertiser_id != advertiser_id:
                raise bad(
                    f"file_paths[{index}] {short(file_path)} is not a file advertiser "
                    f"{advertiser_id} uploaded"
                )
            found.append(uploaded)
        return found

    # ----------------------------------------------------------------- reads

    def _audience_list(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """The advertiser's own audiences and those shared with it, in creation order."""
        advertiser_id = required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        listed = [
            audience
            for audience in self._audiences.values()
            if audience.visible_to(advertiser_id) and not audience.deleted
        ]
        shown, page_info = _page(request, listed, MAX_PAGE_SIZE)
        now = self._clock()
        return {
            "list": [a.details(now, advertiser_id) for a in shown],
            "page_info": page_info,
        }

    def _audience_get(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        advertiser_id = required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        raw = required_param(request, "custom_audience_ids")
        try:
            ids = json.loads(raw)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(a, str) and a for a in ids):
            raise bad('custom_audience_ids must be a JSON-encoded list of strings, e.g. ["123"]')
        if not 1 <= len(ids) <= MAX_GET_IDS:
            raise bad(f"custom_audience_ids must hold 1 to {MAX_GET_IDS} ids, got {len(ids)}")
        found = [self._visible(audience_id, advertiser_id) for audience_id in ids]
        now = self._clock()
        return {
            "list": [
                {"audience_details": a.details(now, advertiser_id), "audience_history": []}
                for a in found
            ]
        }

    def _adgroup_get(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        advertiser_id = required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        owned = [a for a in self._adgroups.values() if a.advertiser_id == advertiser_id]
        shown, page_info = _page(request, owned, MAX_ADGROUP_PAGE_SIZE)
        return {
            "list": [
                {
                    "adgroup_id": adgroup.adgroup_id,
                    "adgroup_name": adgroup.name,
                    "advertiser_id": adgroup.advertiser_id,
                    **adgroup.targeting(),
                }
                for adgroup in shown
            ],
            "page_info": page_info,
        }

    # ------------------------------------------------------------ delete, apply

    def _audience_delete(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """Every id must be a live audience the advertiser sees, none used by its ad
        groups, or nothing is deleted. The owner deletes the audience (its recipients'
        ad groups lose it); a recipient removes the shared audience from its own list."""
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        ids = _ids_field(body, "custom_audience_ids", MAX_DELETE_IDS)
        found = [self._visible(audience_id, advertiser_id) for audience_id in ids]
        for audience in found:
            self._check_deletable(audience, advertiser_id)
        for audience in found:
            if audience.advertiser_id == advertiser_id:
                self._delete(audience)
            else:
                del audience.shared_with[advertiser_id]
        return {}

    def _apply(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """Include or exclude an audience (owned or shared) in ad groups, or disconnect it."""
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        audience_id = required_str(body, "custom_audience_id")
        mode = body.get("action_mode")
        if mode not in ("Apply", "Disconnect"):
            raise bad(f"action_mode must be Apply or Disconnect; got {short(mode)}")
        usage = body.get("usage_mode")
        if usage not in ("Include", "Exclude"):
            raise bad(f"usage_mode must be Include or Exclude; got {short(usage)}")
        adgroup_ids = body.get("adgroup_ids")
        if not nonempty_strings(adgroup_ids):
            raise bad("adgroup_ids must be a non-empty list of strings")
        self._visible(audience_id, advertiser_id)
        adgroups = [self._adgroup(adgroup_id, advertiser_id) for adgroup_id in adgroup_ids]
        verb = "included in" if usage == "Include" else "excluded from"
        for adgroup in adgroups:
            mine, other = (
                (adgroup.included, adgroup.excluded)
                if usage == "Include"
                else (adgroup.excluded, adgroup.included)
            )
            if mode == "Apply" and audience_id in other:
                opposite = "excluded from" if usage == "Include" else "included in"
                raise bad(
                    f"Audience {audience_id} is {opposite} ad group {adgroup.adgroup_id}; "
                    "disconnect it first"
                )
            if mode == "Disconnect" and audience_id not in mine:
                raise bad(f"Audience {audience_id} is not {verb} ad group {adgroup.adgroup_id}")
        for adgroup in adgroups:
            mine = adgroup.included if usage == "Include" else adgroup.excluded
            if mode == "Disconnect":
                mine.remove(audience_id)
            elif audience_id not in mine:
                mine.append(audience_id)
        return {}

    def _adgroup(self, adgroup_id: str, advertiser_id: str) -> AdGroup:
        adgroup = self._adgroups.get(adgroup_id)
        if adgroup is None:
            raise Rejected(40007, f"Ad group {clip(adgroup_id)} does not exist")
        if adgroup.advertiser_id != advertiser_id:
            raise Rejected(40001, f"No permission to operate ad group {adgroup_id}")
        return adgroup

    # ---------------------------------------------------------- customer files

    def _file_upload(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """A multipart upload: the form's fields arrive as ``params``, its file in
        ``files["file"]`` (a path on disk, read line by line)."""
        advertiser_id = required_param(request, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        signature = required_param(request, "file_signature")
        if not _MD5.fullmatch(signature):
            raise bad("file_signature must be the MD5 of the file: 32 hex characters")
        calculate_type = request.params.get("calculate_type")
        if calculate_type != "MULTIPLE_TYPES":
            raise bad(
                "calculate_type must be MULTIPLE_TYPES (a file whose header names its id "
                f"types); got {short(calculate_type)}"
            )
        upload = request.files.get("file")
        if upload is None:
            raise bad("file is required: a multipart part named file (a .csv or .txt file)")
        file_name, path = upload
        if not file_name.lower().endswith((".csv", ".txt")):
            raise bad(f"file must be a .csv or .txt file; got {short(file_name)}")
        people, digest = _read_customer_file(path)
        if digest != signature.lower():
            raise bad(f"file_signature {signature} does not match the file: its MD5 is {digest}")
        file_path = self._new_file_path(UploadedFile(advertiser_id, frozenset(people)))
        return {"file_path": file_path}

    def _file_create(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        name = self._new_name(body)
        if body.get("calculate_type") != "MULTIPLE_TYPES":
            raise bad(
                "calculate_type must be MULTIPLE_TYPES, as the files were uploaded; "
                f"got {short(body.get('calculate_type'))}"
            )
        retention = body.get("retention_in_days")
        if retention is not None and (
            not isinstance(retention, int) or isinstance(retention, bool) or retention < 1
        ):
            raise bad(f"retention_in_days must be a positive integer; got {short(retention)}")
        uploaded = self._uploaded(body, advertiser_id)
        self._check_room(advertiser_id)
        audience = self._create_audience(advertiser_id, name, CUSTOMER_FILE)
        audience.set_people(set().union(*(u.people for u in uploaded)))
        return {"custom_audience_id": audience.audience_id}

    def _file_update(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """Rename an audience, or add, remove or replace a customer file audience's
        people (``action`` defaults to REPLACE, as TikTok's does)."""
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        audience_id = required_str(body, "custom_audience_id")
        audience = self._owned(
            audience_id, advertiser_id, "edit it (add, remove, replace or rename)"
        )
        has_files = "file_paths" in body
        renamed = self._new_name(body) if "custom_audience_name" in body else None
        if not has_files:
            if renamed is None:
                raise bad(
                    "nothing to update: give file_paths (with an action) or custom_audience_name"
                )
            if "action" in body:
                raise bad("action needs file_paths: the files to add, remove or replace")
            audience.name = renamed
            return {}
        if audience.type != CUSTOMER_FILE:
            raise bad(
                f"Audience {audience_id} is a {audience.type} audience; only customer file "
                "audiences are updated with files"
            )
        action = body.get("action", "REPLACE")
        if action not in _UPDATE_ACTIONS:
            raise bad(f"action must be one of APPEND, REMOVE, REPLACE; got {short(action)}")
        self._check_settled(audience)
        uploaded = self._uploaded(body, advertiser_id)
        given: set[Person] = set().union(*(u.people for u in uploaded))
        now = self._clock()
        if action == "REPLACE" and audience.last_replace_at is not None:
            left = audience.last_replace_at + facts.REPLACE_WINDOW_SECONDS - now
            if left > 0:
                raise bad(
                    f"Audience {audience_id} was replaced less than 24 hours ago; one REPLACE "
                    f"is allowed per 24 hours: try again in {_duration(left)}"
                )
        people = _updated(audience.people, given, action)
        if action != "APPEND" and len(people) < MIN_UPDATED_SIZE:
            raise bad(
                f"{action} would leave audience {audience_id} with {len(people)} users; an "
                f"update may not take an audience under {MIN_UPDATED_SIZE:,}"
            )
        audience.set_people(people)
        if action == "REPLACE":
            audience.last_replace_at = now
        if renamed is not None:
            audience.name = renamed
        return {}

    # ----------------------------------------------------------- rule audiences

    def _rule_create(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        name = self._new_name(body)
        audience_type = body.get("audience_type")
        if not isinstance(audience_type, str) or audience_type not in facts.RETENTION_DAYS:
            raise bad(
                "audience_type must be one of "
                + ", ".join(sorted(facts.RETENTION_DAYS))
                + f"; got {short(audience_type)}"
            )
        refresh = body.get("is_auto_refresh", True)
        if not isinstance(refresh, bool):
            raise bad(f"is_auto_refresh must be true or false; got {short(refresh)}")
        spec = body.get("rule_spec")
        _check_rule_spec(audience_type, spec)
        self._check_room(advertiser_id)
        kind = APP_ACTIVITY if audience_type == facts.APP_AUDIENCE_TYPE else ENGAGEMENT
        audience = self._create_audience(advertiser_id, name, kind)
        audience.rule = {"audience_type": audience_type, "rule_spec": spec}
        audience.is_auto_refresh = refresh
        audience.target = _default_target(audience.audience_id)
        return {"custom_audience_id": audience.audience_id}

    # -------------------------------------------------------------- lookalikes

    def _lookalike_create(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        name = self._new_name(body)
        spec = _lookalike_spec(body.get("lookalike_spec"))
        source = self._owned(
            spec["source_audience_id"], advertiser_id, "create a lookalike from it"
        )
        if source.type == LOOKALIKE:
            raise bad(
                f"Audience {source.audience_id} is a lookalike; a lookalike's source must "
                "not be a lookalike"
            )
        size = self._source_size(source)
        self._check_room(advertiser_id)
        audience = self._create_audience(advertiser_id, name, LOOKALIKE)
        audience.lookalike_spec = dict(spec)
        audience.target = size * LOOKALIKE_FACTORS[spec["audience_size"]]
        return {"custom_audience_id": audience.audience_id}

    def _lookalike_update(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """Refresh a lookalike: it grows to its source's size now (times its factor)."""
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        audience_id = required_str(body, "custom_audience_id")
        audience = self._owned(audience_id, advertiser_id, "refresh it")
        if audience.type != LOOKALIKE or audience.lookalike_spec is None:
            raise bad(f"Audience {audience_id} is a {audience.type} audience, not a lookalike")
        spec = audience.lookalike_spec
        source = self._audiences[spec["source_audience_id"]]
        if source.deleted:
            raise bad(f"the source audience {source.audience_id} of {audience_id} was deleted")
        audience.target = self._source_size(source) * LOOKALIKE_FACTORS[spec["audience_size"]]
        return {}

    def _source_size(self, source: Audience) -> int:
        size = source.cover_num(self._clock())
        if size < facts.MIN_LOOKALIKE_SOURCE:
            raise bad(
                f"Audience {source.audience_id} has {size} users; a lookalike's source needs "
                f"at least {facts.MIN_LOOKALIKE_SOURCE}"
            )
        return size

    # ----------------------------------------------------------------- sharing

    def _share(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        owner = self._check_advertiser(grant, advertiser_id)
        ids = _ids_field(body, "custom_audience_ids", facts.MAX_SHARE_IDS)
        recipients = _ids_field(body, "shared_advertiser_ids", facts.MAX_SHARE_IDS)
        audiences = [self._owned(a, advertiser_id, "share it") for a in ids]
        for recipient in recipients:
            known = self._advertisers.get(recipient)
            if known is None:
                raise Rejected(40007, f"Advertiser {clip(recipient)} does not exist")
            if recipient == advertiser_id:
                raise bad(f"Advertiser {advertiser_id} owns the audiences: share with others")
            if known.business_center_id != owner.business_center_id:
                raise bad(
                    f"Advertiser {recipient} is not in the Business Center of advertiser "
                    f"{advertiser_id}; audiences are shared only inside one Business Center"
                )
        for audience in audiences:
            for recipient in recipients:
                audience.shared_with[recipient] = None
        return {}

    def _share_cancel(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        """Stop sharing: the recipient's ad groups lose the audience (seed 002's table:
        one that had only it has no audience targeting left)."""
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        audience_id = required_str(body, "custom_audience_id")
        recipient = required_str(body, "shared_advertiser_id")
        audience = self._owned(audience_id, advertiser_id, "stop sharing it")
        if recipient not in audience.shared_with:
            raise bad(f"Audience {audience_id} is not shared with advertiser {clip(recipient)}")
        del audience.shared_with[recipient]
        for adgroup in self._adgroups_using(audience_id, (recipient,)):
            adgroup.drop(audience_id)
        return {}


# ----------------------------------------------------------------- pure helpers


def _page(request: ApiRequest, rows: list[T], maximum: int) -> tuple[list[T], dict[str, int]]:
    """The page of ``rows`` the request's ``page`` and ``page_size`` (10 unless given, at
    most ``maximum``) ask for, and TikTok's ``page_info`` of it."""
    page = int_param(request, "page", default=1, maximum=None)
    page_size = int_param(request, "page_size", default=10, maximum=maximum)
    start = (page - 1) * page_size
    return rows[start : start + page_size], {
        "page": page,
        "page_size": page_size,
        "total_number": len(rows),
        "total_page": math.ceil(len(rows) / page_size),
    }


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _ids_field(body: Mapping[str, Any], name: str, limit: int) -> list[str]:
    """The ids of list field ``name``: 1 to ``limit`` strings."""
    ids = body.get(name)
    if not nonempty_strings(ids):
        raise bad(f"{name} must be a non-empty list of strings")
    if len(ids) > limit:
        raise Rejected(40011, f"Too many {name}: {len(ids)} > {limit}")
    return ids


def _updated(people: set[Person], given: set[Person], action: str) -> set[Person]:
    """A customer file audience's people after APPEND, REMOVE (everyone sharing an id
    with a given row) or REPLACE."""
    if action == "APPEND":
        return people | given
    if action == "REPLACE":
        return set(given)
    removed = {pair for person in given for pair in person}
    return {person for person in people if person.isdisjoint(removed)}


def _read_customer_file(path: Path) -> tuple[list[Person], str]:
    """The people of a customer file and its MD5 (hex), read line by line."""
    digest = hashlib.md5(usedforsecurity=False)
    people: list[Person] = []
    header: list[str] | None = None
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            digest.update(raw)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise bad(f"file line {number} is not UTF-8") from None
            if header is None:
                header = _header(line)
                continue
            if not line:
                continue
            cells = line.split(",")
            if len(cells) != len(header):
                raise bad(
                    f"file line {number} has {len(cells)} values but the header names "
                    f"{len(header)} id types"
                )
            person = []
            for kind, cell in zip(header, cells, strict=True):
                if not cell:
                    continue
                # Never echo the value: a caller that forgot to hash would leak PII.
                if not _HASH.fullmatch(cell):
                    raise bad(
                        f"file line {number}: a {kind} value is not 64 lowercase hex "
                        "characters (a SHA-256 hash)"
                    )
                person.append((kind, cell))
            if not person:
                raise bad(f"file line {number} has no identifier: every value is empty")
            people.append(frozenset(person))
    if header is None:
        raise bad("file is empty: it needs a header line naming its id types")
    if not people:
        raise bad("file has a header but no rows")
    return people, digest.hexdigest()


def _header(line: str) -> list[str]:
    names = line.split(",")
    for name in names:
        if name not in FILE_ID_TYPES:
            raise bad(
                f"file header names {short(name)}; each column must be one of "
                + ", ".join(FILE_ID_TYPES)
            )
    if len(set(names)) != len(names):
        raise bad("file header names an id type twice")
    return names


def _lookalike_spec(spec: object) -> dict[str, Any]:
    """``lookalike_spec``, checked (its source is checked by the caller)."""
    if not isinstance(spec, dict):
        raise bad("lookalike_spec is required and must be an object")
    unknown = sorted(set(spec) - _LOOKALIKE_FIELDS)
    if unknown:
        raise bad(f"lookalike_spec has unknown field(s): {', '.join(unknown)}")
    source = spec.get("source_audience_id")
    if not isinstance(source, str) or not source:
        raise bad("lookalike_spec.source_audience_id is required and must be a string")
    sizes = tuple(facts.LOOKALIKE_SIZES.values())
    if spec.get("audience_size") not in sizes:
        raise bad(
            f"lookalike_spec.audience_size must be one of {', '.join(sizes)}; "
            f"got {short(spec.get('audience_size'))}"
        )
    systems = tuple(facts.LOOKALIKE_OS.values())
    if spec.get("mobile_os", "ALL") not in systems:
        raise bad(
            f"lookalike_spec.mobile_os must be one of {', '.join(systems)}; "
            f"got {short(spec.get('mobile_os'))}"
        )
    if not isinstance(spec.get("include_source", False), bool):
        raise bad("lookalike_spec.include_source must be true or false")
    if not nonempty_strings(spec.get("location_ids")):
        raise bad("lookalike_spec.location_ids must be a non-empty list of location ids")
    if "placements" in spec and not nonempty_strings(spec["placements"]):
        raise bad("lookalike_spec.placements must be a non-empty list of strings")
    return spec


def _check_rule_spec(audience_type: str, spec: object) -> None:
    """Refuse a ``rule_spec`` TikTok would refuse for ``audience_type`` (see the module)."""
    if not isinstance(spec, dict):
        raise bad("rule_spec is required and must be an object")
    unknown = sorted(set(spec) - {"inclusion_rule_set", "exclusion_rule_set"})
    if unknown:
        raise bad(f"rule_spec has unknown field(s): {', '.join(unknown)}")
    if "inclusion_rule_set" not in spec:
        raise bad("rule_spec.inclusion_rule_set is required")
    for name in ("inclusion_rule_set", "exclusion_rule_set"):
        if name in spec:
            _check_rule_set(audience_type, spec[name], f"rule_spec.{name}")


def _combined(group: object, where: str, items: str, *, not_an_object: str) -> list[Any]:
    """The ``items`` list of a rule set or filter set (an object with an AND / OR
    ``operator`` and a non-empty list), or the 40002 refusal naming what is wrong."""
    if not isinstance(group, dict):
        raise bad(f"{where} {not_an_object}")
    if group.get("operator") not in _OPERATORS:
        raise bad(f"{where}.operator must be AND or OR; got {short(group.get('operator'))}")
    found = group.get(items)
    if not isinstance(found, list) or not found:
        raise bad(f"{where}.{items} must be a non-empty list")
    return found


def _check_rule_set(audience_type: str, rule_set: object, where: str) -> None:
    rules = _combined(rule_set, where, "rules", not_an_object="must be an object")
    if len(rules) > facts.MAX_RULES:
        raise bad(f"{where} has {len(rules)} rules; at most {facts.MAX_RULES} are allowed")
    accounts = set()
    for index, rule in enumerate(rules):
        account = _check_rule(audience_type, rule, f"{where}.rules[{index}]")
        if account is not None:
            accounts.add(account)
    if len(accounts) > 1:
        raise bad(
            f"{where} names {len(accounts)} TikTok accounts (identity_id); the videos of "
            "one rule set must all come from one account"
        )


def _check_rule(audience_type: str, rule: object, where: str) -> str | None:
    """Check one rule; the TikTok account it names (public and LIVE videos), if any."""
    if not isinstance(rule, dict):
        raise bad(f"{where} must be an object")
    unknown = sorted(
        set(rule) - {"event_source_ids", "retention_days", "filter_set", "identity_id"}
    )
    if unknown:
        raise bad(f"{where} has unknown field(s): {', '.join(unknown)}")
    sources = rule.get("event_source_ids")
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise bad(f"{where}.event_source_ids must be a list of ids (strings)")
    account = rule.get("identity_id")
    if audience_type in facts.ACCOUNT_AUDIENCE_TYPES:
        if not isinstance(account, str) or not account:
            raise bad(f"{where}.identity_id is required: the TikTok account of the videos")
        if not 1 <= len(sources) <= facts.MAX_VIDEOS:
            raise bad(
                f"{where}.event_source_ids has {len(sources)} videos; 1 to "
                f"{facts.MAX_VIDEOS} are allowed"
            )
    elif account is not None:
        raise bad(f"{where}.identity_id is only for public and LIVE video audiences")
    if audience_type == facts.APP_AUDIENCE_TYPE and len(sources) != 1:
        raise bad(f"{where}.event_source_ids must hold exactly one app id")
    offered = facts.RETENTION_DAYS[audience_type]
    codes = _check_filter_set(rule.get("filter_set"), offered, f"{where}.filter_set")
    days = rule.get("retention_days")
    for code in codes:
        if days not in offered[code]:
            raise bad(
                f"{where}.retention_days {short(days)} is not offered for {code} "
                f"({audience_type}): one of {', '.join(map(str, offered[code]))}"
            )
    return account if isinstance(account, str) else None


def _check_filter_set(
    filter_set: object, offered: Mapping[str, tuple[int, ...]], where: str
) -> list[str]:
    """The action (or event) codes a rule's ``filter_set`` names, each one offered."""
    filters = _combined(
        filter_set, where, "filters", not_an_object="is required and must be an object"
    )
    codes: list[str] = []
    for index, item in enumerate(filters):
        here = f"{where}.filters[{index}]"
        if not isinstance(item, dict):
            raise bad(f"{here} must be an object")
        if item.get("field") != "ACTION" or item.get("operator") != "IN":
            raise bad(f'{here} must be {{"field": "ACTION", "operator": "IN", "values": [...]}}')
        values = item.get("values")
        if not nonempty_strings(values):
            raise bad(f"{here}.values must be a non-empty list of codes")
        for value in values:
            if value not in offered:
                raise bad(
                    f"{here}.values: {short(value)} is not an action or event of this "
                    f"audience type; one of {', '.join(sorted(offered))}"
                )
        codes.extend(values)
    return codes
