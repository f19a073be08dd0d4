"""The TikTok Audiences actions of both instance modes, on the destination kit.

- Native: ``addToAudience`` / ``removeFromAudience``: the audience comes from the event
  (``external_audience_id``, or created once for ``audience_key``), the advertiser from
  the event or the ``advertiser_id`` setting.
- Legacy: ``createAudience``, ``addUser``, ``removeUser``: advertiser and audience come
  from the mapping or the settings.

Membership actions send one ``segment/mapping`` call per (advertiser, audience, add or
delete) batch. ``id_schema`` lists, in the fixed order of ``ID_TYPES``, the identifier
types at least one user of the batch has; each user is a row with one entry per slot,
``{}`` where that user has no such identifier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from destination.errors import PayloadError, PermanentError
from destination.kit.action import Outcome, Prepared
from destination.kit.fields import Field
from destination.kit.sql import CompiledDigest, PayloadSql, Scope
from destination.tiktok.api import TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.digest_sql import create_audience_digest, membership_digest
from destination.tiktok.fields import CATALOGUE, PLACE_FIELDS, ActionInfo
from destination.tiktok.normalize import (
    ID_TYPES,
    advertising_id_type,
    hash_advertising_id,
    hash_email,
    hash_phone,
)
from destination.tiktok.settings import Settings

__all__ = [
    "AudienceToCreate",
    "Context",
    "CreateAudience",
    "Membership",
    "MembershipDigest",
    "build_action",
]


@dataclass
class Context:
    """What the actions share during one run. ``dropped`` counts identifiers left out."""

    settings: Settings
    api: TikTokApi
    registry: AudienceRegistry
    dropped: Counter[str] = field(default_factory=Counter)


def user_identifiers(
    payload: Mapping[str, Any], settings: Settings
) -> tuple[dict[str, str], list[str]]:
    """Hashed identifiers of one user by id type, and why any present one was dropped."""
    ids: dict[str, str] = {}
    dropped: list[str] = []
    get = payload.get
    email = get("email")
    if email is not None and get("send_email", True):
        _hash_into(
            ids,
            dropped,
            "EMAIL_SHA256",
            hash_email,
            email,
            remove_plus_suffix=settings.email_remove_plus_suffix,
            remove_dots=settings.email_remove_dots,
        )
    phone = get("phone")
    if phone is not None and get("send_phone", True):
        _hash_into(
            ids,
            dropped,
            "PHONE_SHA256",
            hash_phone,
            phone,
            default_region=settings.default_phone_region,
            phone_format=settings.phone_format,
        )
    advertising_id = get("advertising_id")
    if advertising_id is not None and get("send_advertising_id", True):
        id_type = advertising_id_type(get("device_type"))
        if id_type is None:
            dropped.append("advertising id has no known device type (expected ios or android)")
        else:
            _hash_into(ids, dropped, id_type, hash_advertising_id, advertising_id)
    return ids, dropped


def _hash_into(
    ids: dict[str, str],
    dropped: list[str],
    id_type: str,
    hasher: Callable[..., str],
    value: Any,
    **options: Any,
) -> None:
    """``ids[id_type]`` is the hash of ``value``, or ``dropped`` says why there is none."""
    try:
        ids[id_type] = hasher(value, **options)
    except PayloadError as exc:
        dropped.append(str(exc))


def batch_body(
    audience_id: str, users: Sequence[Mapping[str, str]]
) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """``id_schema`` and ``batch_data`` for users (id type -> hash) of one audience."""
    present: set[str] = set()
    for user in users:
        present.update(user)
    id_schema: list[str] = [t for t in ID_TYPES if t in present]
    # one list for every entry: the body is only serialized, never changed
    audience_ids = [audience_id]
    batch_data: list[list[dict[str, Any]]] = [
        [{"id": user[t], "audience_ids": audience_ids} if t in user else {} for t in id_schema]
        for user in users
    ]
    return id_schema, batch_data


_MAX_REMEMBERED_GROUPS = 10_000  # per action: TikTok allows 400 audiences per advertiser


class MembershipDigest(TypedDict):
    """What ``Membership.digest`` hands to ``place``: JSON, as it may come from a worker.

    ``ids`` are the user's hashed identifiers by id type, ``dropped`` says why any present
    identifier was left out, and ``where`` holds the payload's ``PLACE_FIELDS`` in that
    order (null for one left out)."""

    ids: dict[str, str]
    dropped: list[str]
    where: list[Any]


class AudienceToCreate(TypedDict, total=False):
    """What ``CreateAudience.digest`` hands to ``place``: the payload's two fields."""

    advertiser_id: Any
    audience_name: Any


class _CatalogueAction:
    """What every TikTok action shares: its catalogue entry and the run's context."""

    def __init__(self, info: ActionInfo, context: Context) -> None:
        self._info = info
        self._context = context

    @property
    def key(self) -> str:
        return self._info.key

    @property
    def title(self) -> str:
        return self._info.title

    @property
    def fields(self) -> Sequence[Field]:
        return self._info.fields


def resolve_advertiser(payload: Mapping[str, Any], settings: Settings) -> str:
    """The advertiser from the payload, else the ``advertiser_id`` setting."""
    advertiser_id = payload.get("advertiser_id") or settings.advertiser_id
    if not advertiser_id:
        raise PayloadError(
            "no advertiser: map advertiser_id or set the advertiser_id setting",
            reason="no_advertiser",
        )
    return str(advertiser_id)


class Membership(_CatalogueAction):
    """Adds users to or removes them from an audience (both modes)."""

    def __init__(self, info: ActionInfo, context: Context, *, tiktok_action: str) -> None:
        super().__init__(info, context)
        self._tiktok_action = tiktok_action
        self._opposite = "delete" if tiktok_action == "add" else "add"
        # the payload's (advertiser, audience) fields -> (group, conflicts): a few per run
        self._groups: dict[tuple[Any, ...], tuple[Hashable, Hashable]] = {}

    def _audience(self, payload: Mapping[str, Any], advertiser_id: str) -> str:
        settings = self._context.settings
        if self._info.mode == "legacy":
            audience_id = payload.get("audience_id") or settings.audience_id
            if not audience_id:
                raise PayloadError(
                    "no audience: map audience_id or set the audience_id setting",
                    reason="no_audience",
                )
            return str(audience_id)
        if payload.get("external_audience_id"):
            return str(payload["external_audience_id"])
        key = payload.get("audience_key")
        if not key:
            raise PayloadError(
                "no audience: the event has neither an external_audience_id nor an "
                "audience_key (context.personas.computation_key) to create one for",
                reason="no_audience",
            )
        try:
            return self._context.registry.resolve(advertiser_id, str(key), str(key))
        except PermanentError as exc:
            raise PayloadError(
                f"creating the audience failed: {exc}", reason="tiktok_rejected"
            ) from exc

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        return self.place(self.digest(payload))

    def digest(self, payload: Mapping[str, Any]) -> MembershipDigest:
        """The hashed identifiers (the costly, pure part) and the fields ``place`` needs."""
        ids, dropped = user_identifiers(payload, self._context.settings)
        return {"ids": ids, "dropped": dropped, "where": list(map(payload.get, PLACE_FIELDS))}

    def compile_digest(self, payload: PayloadSql, scope: Scope) -> CompiledDigest:
        """``digest`` in SQL, for the compiled route (``tiktok.digest_sql``)."""
        return membership_digest(payload, self._context.settings, scope)

    def place(self, digest: MembershipDigest) -> Prepared:
        ids, dropped = digest["ids"], digest["dropped"]
        if not ids:
            why = (
                "; ".join(dropped) if dropped else "the event has no email, phone or advertising id"
            )
            raise PayloadError(f"no usable identifier: {why}", reason="no_identifier")
        if dropped:
            self._context.dropped.update(dropped)
        where = tuple(digest["where"])  # a key of ``_groups``
        groups = self._groups.get(where)
        if groups is None:
            groups = self._resolve_groups(where)
        group, conflicts = groups
        return Prepared(group=group, item=ids, conflicts=conflicts, keys=frozenset(ids.values()))

    def _resolve_groups(self, where: tuple[Any, ...]) -> tuple[Hashable, Hashable]:
        """The batch group the fields ``where`` name and the group it conflicts with,
        remembered. A failure (``PayloadError``) is not: the next event tries again."""
        payload = {k: v for k, v in zip(PLACE_FIELDS, where, strict=True) if v is not None}
        advertiser_id = resolve_advertiser(payload, self._context.settings)
        audience_id = self._audience(payload, advertiser_id)
        groups = (
            (advertiser_id, audience_id, self._tiktok_action),
            (advertiser_id, audience_id, self._opposite),
        )
        if len(self._groups) >= _MAX_REMEMBERED_GROUPS:  # an input naming audiences by the
            self._groups.clear()  # million: forget rather than grow
        self._groups[where] = groups
        return groups

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        assert isinstance(group, tuple)
        advertiser_id, audience_id, tiktok_action = group
        id_schema, batch_data = batch_body(audience_id, items)
        try:
            refused = self._context.api.segment_mapping(
                advertiser_ids=[advertiser_id],
                action=tiktok_action,
                id_schema=id_schema,
                batch_data=batch_data,
            )
        except PermanentError as exc:
            return [Outcome.rejected("tiktok_rejected", str(exc))] * len(items)
        return [
            Outcome.rejected("tiktok_rejected", refused[i]) if i in refused else Outcome.delivered()
            for i in range(len(items))
        ]


class CreateAudience(_CatalogueAction):
    """Creates a partner audience once per (advertiser, name); legacy mode."""

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        return self.place(self.digest(payload))

    def digest(self, payload: Mapping[str, Any]) -> AudienceToCreate:
        digest: AudienceToCreate = {}
        if "advertiser_id" in payload:
            digest["advertiser_id"] = payload["advertiser_id"]
        if "audience_name" in payload:
            digest["audience_name"] = payload["audience_name"]
        return digest

    def compile_digest(self, payload: PayloadSql, scope: Scope) -> CompiledDigest:
        """``digest`` in SQL, for the compiled route (``tiktok.digest_sql``)."""
        return create_audience_digest(payload, scope)

    def place(self, digest: AudienceToCreate) -> Prepared:
        advertiser_id = resolve_advertiser(digest, self._context.settings)
        return Prepared(group=advertiser_id, item=str(digest["audience_name"]))

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        outcomes = []
        for name in items:
            try:
                self._context.registry.resolve(str(group), f"name:{name}", name)
            except PermanentError as exc:
                outcomes.append(Outcome.rejected("tiktok_rejected", str(exc)))
            else:
                outcomes.append(Outcome.delivered())
        return outcomes


def build_action(key: str, context: Context) -> Membership | CreateAudience:
    """The action named ``key`` of the catalogue, bound to this run's context."""
    info = CATALOGUE[key]
    if key == "createAudience":
        return CreateAudience(info, context)
    tiktok_action = "add" if key in ("addToAudience", "addUser") else "delete"
    return Membership(info, context, tiktok_action=tiktok_action)
