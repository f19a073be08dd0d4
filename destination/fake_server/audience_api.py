"""The fake TikTok's segment API: partner audiences and their streamed members.

``AudienceApi`` is the part of ``FakeTikTok`` that answers ``segment/audience/`` (create,
delete), ``segment/mapping/`` (add or delete members) and ``user/info/``, and holds the
checks the DMP endpoints (``dmp_api``) share with them: advertiser access, finding an
audience, the limit of audiences per advertiser, deleting. Each endpoint needs a scope of
the token (``routes``), checks its request the way TikTok does (advertiser access,
``id_schema`` and ``batch_data``, the limits on names, batch sizes and audiences per
advertiser) and changes nothing when it refuses. Audiences created through the API refuse
writes for ``fresh_audience_seconds``, as TikTok's do for a minute or two after creation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from destination.backends import ApiRequest
from destination.fake_server.checks import (
    Partial,
    Rejected,
    bad,
    body_object,
    clip,
    nonempty_strings,
    required_str,
    short,
)
from destination.fake_server.store import (
    SCOPE_WRITE_AUDIENCES,
    Advertiser,
    Audience,
    FakeStore,
    Grant,
    segment_name,
)

__all__ = ["ID_TYPES", "AudienceApi", "Handler"]

#: The identifier types ``segment/mapping/`` accepts in ``id_schema``.
ID_TYPES: tuple[str, ...] = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "AAID_SHA256",
    "IDFA_MD5",
    "AAID_MD5",
)

_HEX = {64: re.compile(r"[0-9a-f]{64}"), 32: re.compile(r"[0-9a-f]{32}")}
# an id type -> the length of its lowercase hex ids and their pattern
_ID_PATTERN = {
    kind: (32, _HEX[32]) if kind.endswith("_MD5") else (64, _HEX[64]) for kind in ID_TYPES
}
_MAPPING_FIELDS = ("advertiser_ids", "action", "id_schema", "batch_data")

#: An endpoint: the token's grant and the request -> the envelope's ``data``.
Handler = Callable[[Grant, ApiRequest], dict[str, Any]]


class AudienceApi(FakeStore):
    """The part of ``FakeTikTok`` that manages audiences; see the module docstring."""

    #: The ids ``segment/mapping`` refuses (``FaultControls.refuse_users`` sets them).
    _refused_ids: frozenset[str]

    def __init__(
        self,
        *,
        max_batch_users: int,
        max_audiences_per_advertiser: int,
        fresh_audience_seconds: float,
        **store: Any,
    ) -> None:
        if max_batch_users < 1:
            raise ValueError("max_batch_users must be at least 1")
        if max_audiences_per_advertiser < 0:
            raise ValueError("max_audiences_per_advertiser must not be negative")
        super().__init__(**store)
        self.max_batch_users = max_batch_users
        self.max_audiences_per_advertiser = max_audiences_per_advertiser
        self.fresh_audience_seconds = fresh_audience_seconds
        #: path -> method -> (handler, the scope the token needs, None for any token)
        self._routes: dict[str, dict[str, tuple[Handler, int | None]]] = {
            "segment/audience": {"POST": (self._segment_audience, SCOPE_WRITE_AUDIENCES)},
            "segment/mapping": {"POST": (self._segment_mapping, SCOPE_WRITE_AUDIENCES)},
            "user/info": {"GET": (self._user_info, None)},
        }

    # ------------------------------------------ checks (the caller holds the lock)

    def _check_advertiser(self, grant: Grant, advertiser_id: str) -> Advertiser:
        if advertiser_id not in grant.advertiser_ids or advertiser_id not in self._advertisers:
            raise Rejected(40001, f"No permission to operate advertiser {clip(advertiser_id)}")
        return self._advertisers[advertiser_id]

    def _find_audience(self, audience_id: str, owners: Iterable[str]) -> Audience:
        audience = self._audiences.get(audience_id)
        if audience is None or audience.deleted:
            raise Rejected(40007, f"Audience {clip(audience_id)} does not exist")
        if audience.advertiser_id not in set(owners):
            raise Rejected(40001, f"No permission to operate audience {audience_id}")
        return audience

    def _writable_audience(self, audience_id: str, owners: Iterable[str]) -> Audience:
        audience = self._find_audience(audience_id, owners)
        self._check_settled(audience)
        return audience

    def _check_settled(self, audience: Audience) -> None:
        """Refuse a write to an audience created less than ``fresh_audience_seconds`` ago."""
        age = self._clock() - audience.created_at
        if self.fresh_audience_seconds > 0 and age < self.fresh_audience_seconds:
            raise bad(
                f"Audience {audience.audience_id}: audience is still being processed, "
                "try again in a minute or two"
            )

    def _check_room(self, advertiser_id: str) -> None:
        """Refuse a create that would take the advertiser over its audience limit."""
        live = sum(
            1
            for audience in self._audiences.values()
            if audience.advertiser_id == advertiser_id and not audience.deleted
        )
        if live >= self.max_audiences_per_advertiser:
            raise bad(
                f"Advertiser {advertiser_id} has reached the limit of "
                f"{self.max_audiences_per_advertiser} custom audiences; "
                "delete some before creating more"
            )

    def _check_deletable(self, audience: Audience, advertiser_id: str) -> None:
        """Refuse to delete an audience the advertiser's ad groups still use (TikTok's
        rule: disconnect it first)."""
        using = self._adgroups_using(audience.audience_id, (advertiser_id,))
        if using:
            names = ", ".join(adgroup.adgroup_id for adgroup in using)
            raise bad(
                f"Audience {audience.audience_id} is applied to ad group(s) {names}; "
                "disconnect it from them before deleting it"
            )

    def _delete(self, audience: Audience) -> None:
        """Delete an owned audience (``_check_deletable`` passed): the ad groups of the
        advertisers it was shared with are disconnected from it, as when sharing stops."""
        for adgroup in self._adgroups_using(audience.audience_id, audience.shared_with):
            adgroup.drop(audience.audience_id)
        audience.deleted = True

    # --------------------------------------- endpoints (the caller holds the lock)

    def _segment_audience(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        advertiser_id = required_str(body, "advertiser_id")
        self._check_advertiser(grant, advertiser_id)
        action = body.get("action")
        if action == "create":
            name = body.get("custom_audience_name")
            if not isinstance(name, str) or not name.strip():
                raise bad("custom_audience_name is required and must be a non-empty string")
            self._check_room(advertiser_id)
            audience = self._create_audience(advertiser_id, segment_name(name))
            return {"audience_id": audience.audience_id}
        if action == "delete":
            audience_id = required_str(body, "delete_audience_id")
            audience = self._find_audience(audience_id, (advertiser_id,))
            self._check_deletable(audience, advertiser_id)
            self._delete(audience)
            return {}
        raise bad(f"action must be one of create, delete; got {short(action)}")

    def _segment_mapping(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        body = body_object(request)
        missing = [name for name in _MAPPING_FIELDS if name not in body]
        if missing:
            raise bad(f"Missing required field(s): {', '.join(missing)}")

        advertiser_ids = body["advertiser_ids"]
        if not nonempty_strings(advertiser_ids):
            raise bad("advertiser_ids must be a non-empty list of strings")
        centers = {self._check_advertiser(grant, a).business_center_id for a in advertiser_ids}
        if len(centers) > 1:
            raise bad("advertiser_ids must all belong to one Business Center")

        action = body["action"]
        if action not in ("add", "delete"):
            raise bad(f"action must be one of add, delete; got {short(action)}")

        id_schema = body["id_schema"]
        if not isinstance(id_schema, list) or not id_schema:
            raise bad("id_schema must be a non-empty list")
        for index, kind in enumerate(id_schema):
            if not isinstance(kind, str) or kind not in ID_TYPES:
                raise bad(
                    f"id_schema[{index}] is {short(kind)}; it must be one of " + ", ".join(ID_TYPES)
                )
        if len(set(id_schema)) != len(id_schema):
            raise bad("id_schema must not list an identifier type twice")

        batch = body["batch_data"]
        if not isinstance(batch, list) or not batch:
            raise bad("batch_data must be a non-empty list")
        if len(batch) > self.max_batch_users:
            raise Rejected(
                40011,
                f"Too many users in one request: {len(batch)} > {self.max_batch_users}",
            )

        # Validate everything first; only then change state.
        # (a request carries thousands of entries: the per-entry checks stay lean, and
        # the error messages are built only for the entry that fails)
        changes: list[tuple[int, Audience, str, str]] = []
        refused_rows: set[int] = set()
        refused_ids = self._refused_ids
        checked: dict[str, Audience] = {}
        patterns = [(kind, *_ID_PATTERN[kind]) for kind in id_schema]
        for row_index, row in enumerate(batch):
            if not isinstance(row, list):
                raise bad(f"batch_data[{row_index}] must be a list")
            if len(row) != len(id_schema):
                raise bad(
                    f"batch_data[{row_index}] has {len(row)} entries "
                    f"but id_schema has {len(id_schema)}"
                )
            filled = 0
            for slot, entry in enumerate(row):
                if not isinstance(entry, dict):
                    raise bad(f"batch_data[{row_index}][{slot}] must be an object")
                if not entry:
                    continue
                kind, length, pattern = patterns[slot]
                hashed = entry.get("id")
                # Never echo the value: a caller that forgot to hash would leak PII.
                if not isinstance(hashed, str) or not pattern.fullmatch(hashed):
                    raise bad(
                        f"batch_data[{row_index}][{slot}].id must be {length} lowercase hex "
                        f"characters ({kind})"
                    )
                audience_ids = entry.get("audience_ids")
                if not nonempty_strings(audience_ids):
                    raise bad(
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
                raise bad(f"batch_data[{row_index}] has no identifier: every entry is {{}}")

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
            raise Partial({"failed_rows": failed})
        return {}

    def _user_info(self, grant: Grant, request: ApiRequest) -> dict[str, Any]:
        del request
        return {
            "display_name": "fake user",
            "email": "fake@example.invalid",
            "id": grant.user_id,
        }
