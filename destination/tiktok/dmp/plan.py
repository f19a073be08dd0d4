"""What ``audiences apply`` would do: the definitions against the state and TikTok.

A plan compares three things: the definition files (what should be), the state file
(which audience each key is, and what was applied to it), and the advertiser's audiences
and ad groups as TikTok lists them now. Each definition gives one item: ``create`` (no
audience yet, or TikTok lost it), ``update`` (a customer file whose file or definition
changed: sent with its explicit action; a rule or lookalike audience whose definition
changed: TikTok cannot edit those rules, so it is made again and the old one deleted),
``unchanged``; plus ``share`` / ``unshare`` items for the advertisers added to or removed
from ``share_with``, and with ``--prune`` a ``delete`` for each key the state knows and no
file defines. Audiences the state does not know are never in a plan.

What TikTok would refuse is found here, before any call, as a ``blocked`` reason on the
item (``apply`` refuses to start while any item is blocked): an audience shared with this
advertiser by another (the recipient can only apply it: no edit, share, stop sharing or
lookalike from it), a delete or a re-creation of an audience applied to ad groups
(disconnect it first: the ad groups are named), a customer file replaced again within
TikTok's 24 hours (the time left is given). Going over TikTok's 400 custom audiences per
advertiser stops the plan itself.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from destination.errors import ConfigurationError
from destination.tiktok.api import TikTokApi
from destination.tiktok.dmp import facts
from destination.tiktok.dmp.definitions import Definition
from destination.tiktok.dmp.state import AudienceState, Held

__all__ = ["KINDS", "Item", "Plan", "Remote", "RemoteAudience", "fetch_remote", "make_plan"]

KINDS = ("create", "update", "share", "unshare", "delete", "unchanged")


@dataclass(frozen=True)
class RemoteAudience:
    """An audience as TikTok lists it for the advertiser."""

    audience_id: str
    name: str
    type: str
    size: int
    owned: bool  # False: shared with this advertiser by its owner


@dataclass(frozen=True)
class Remote:
    """The advertiser's audiences and, per audience id, the ad groups applying it."""

    audiences: dict[str, RemoteAudience]
    adgroups: dict[str, tuple[str, ...]]

    def owned(self) -> int:
        return sum(a.owned for a in self.audiences.values())


def fetch_remote(api: TikTokApi, advertiser_id: str) -> Remote:
    """What TikTok holds now: every audience (own and shared) and every ad group's links."""
    audiences: dict[str, RemoteAudience] = {}
    for entry in api.list_audiences(advertiser_id):
        audience_id = str(entry.get("audience_id", ""))
        if not audience_id:
            continue
        audiences[audience_id] = RemoteAudience(
            audience_id=audience_id,
            name=str(entry.get("name", "")),
            type=str(entry.get("type", "")),
            size=int(entry.get("cover_num") or 0),
            owned=bool(entry.get("is_creator", True)),
        )
    using: dict[str, list[str]] = {}
    for adgroup in api.list_adgroups(advertiser_id):
        adgroup_id = str(adgroup.get("adgroup_id", ""))
        for key in ("audience_ids", "excluded_audience_ids"):
            for audience_id in adgroup.get(key) or ():
                using.setdefault(str(audience_id), []).append(adgroup_id)
    return Remote(audiences, {k: tuple(sorted(set(v))) for k, v in using.items()})


@dataclass(frozen=True)
class Item:
    """One thing apply would do (or, for ``unchanged``, leave). ``detail`` says what and
    why; ``blocked`` why TikTok would refuse it (apply does nothing while one is set)."""

    kind: str
    key: str
    name: str
    type: str
    audience_id: str | None = None
    detail: str = ""
    advertiser_ids: tuple[str, ...] = ()  # share / unshare: with whom
    adgroups: tuple[str, ...] = ()  # the ad groups applying the audience
    size: int | None = None  # users TikTok matched, when the audience exists
    blocked: str = ""
    file_md5: str = ""  # customer files: the file this plan sends

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "kind": self.kind,
            "key": self.key,
            "name": self.name,
            "type": self.type,
            "audience_id": self.audience_id,
            "detail": self.detail,
        }
        if self.advertiser_ids:
            shown["advertiser_ids"] = list(self.advertiser_ids)
        if self.adgroups:
            shown["adgroups"] = list(self.adgroups)
        if self.size is not None:
            shown["size"] = self.size
        if self.blocked:
            shown["blocked"] = self.blocked
        return shown


@dataclass(frozen=True)
class Plan:
    items: list[Item]
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = Counter(item.kind for item in self.items)
        return {kind: counted.get(kind, 0) for kind in KINDS}

    @property
    def blocked(self) -> list[Item]:
        return [item for item in self.items if item.blocked]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "items": [item.to_json() for item in self.items if item.kind != "unchanged"],
            "unchanged_keys": [i.key for i in self.items if i.kind == "unchanged"],
            "blocked": len(self.blocked),
            "warnings": self.warnings,
        }


def file_md5(path: Path) -> str:
    """The MD5 of a customer file as written (what tells a changed file)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def customer_file_path(definition: Definition) -> Path:
    return (definition.path.parent / str(definition.spec["path"])).resolve()


def make_plan(
    definitions: Sequence[Definition],
    state: AudienceState,
    remote: Remote,
    *,
    prune: bool,
    now: float | None = None,
) -> Plan:
    """The plan of applying ``definitions`` (see the module's docstring)."""
    now = time.time() if now is None else now
    items: list[Item] = []
    warnings: list[str] = []
    defined = {d.key for d in definitions}
    ids = {key: held.audience_id for key, held in state.audiences.items()}
    for definition in definitions:
        held = state.audiences.get(definition.key)
        made = _items_for(definition, held, remote, now=now, warnings=warnings)
        if definition.type == "lookalike":
            made = [_source_check(item, definition, ids, remote) for item in made]
        items.extend(made)
    items = _follow_sources(items, definitions, state, ids, remote)
    for key, held in sorted(state.audiences.items()):
        for old in held.replaced:  # left by an apply that made the key again and stopped
            adgroups = remote.adgroups.get(old, ())
            items.append(
                Item(
                    "delete",
                    key,
                    "",
                    held.type,
                    old,
                    detail="the audience it was before it was made again",
                    adgroups=adgroups,
                    blocked=_applied(adgroups, "deleted"),
                )
            )
        if key in defined:
            continue
        if not prune:
            warnings.append(
                f"{key}: audience {held.audience_id} has no definition any more; kept "
                "(apply --prune deletes it)"
            )
            continue
        found = remote.audiences.get(held.audience_id)
        if found is None:
            warnings.append(f"{key}: audience {held.audience_id} is gone at TikTok already")
        adgroups = remote.adgroups.get(held.audience_id, ())
        items.append(
            Item(
                "delete",
                key,
                found.name if found else "",
                held.type,
                held.audience_id,
                detail="no definition any more (--prune)",
                adgroups=adgroups,
                blocked=_applied(adgroups, "deleted"),
            )
        )
    _check_limit(items, remote)
    return Plan(items, warnings)


def _items_for(
    definition: Definition,
    held: Held | None,
    remote: Remote,
    *,
    now: float,
    warnings: list[str],
) -> list[Item]:
    key, name, kind = definition.key, definition.name, definition.type
    md5 = customer_file_path(definition) if kind == "customer_file" else None
    digest = file_md5(md5) if md5 is not None else ""
    found = remote.audiences.get(held.audience_id) if held else None
    if held is None or found is None:
        why = "new" if held is None else f"audience {held.audience_id} is gone at TikTok"
        create = Item("create", key, name, kind, detail=why, file_md5=digest)
        shares = [
            Item("share", key, name, kind, detail="with the new audience", advertiser_ids=(a,))
            for a in definition.share_with
        ]
        return [create, *shares]
    audience_id = found.audience_id
    adgroups = remote.adgroups.get(audience_id, ())
    size = found.size
    if size < facts.MIN_TARGETABLE:
        warnings.append(
            f"{key}: audience {audience_id} holds {size} users; TikTok targets an ad group "
            f"with it from {facts.MIN_TARGETABLE:,} on (audiences take 24-48 h to fill)"
        )
    items: list[Item] = []
    recipient = (
        ""
        if found.owned
        else (
            f"audience {audience_id} is shared with this advertiser by its owner: a recipient "
            "can only apply it (no edit, share, stop sharing or lookalike)"
        )
    )
    change = _change(definition, held, digest, now=now, named=found.name)
    if change is None:
        items.append(Item("unchanged", key, name, kind, audience_id, size=size))
    else:
        detail, blocked = change
        if not blocked and kind != "customer_file":
            blocked = _applied(adgroups, "made again")
        items.append(
            Item(
                "update",
                key,
                name,
                kind,
                audience_id,
                detail=detail,
                adgroups=adgroups,
                size=size,
                blocked=recipient or blocked,
                file_md5=digest,
            )
        )
    wanted, had = set(definition.share_with), set(held.shared_with)
    for advertiser_id in sorted(wanted - had):
        items.append(
            Item(
                "share",
                key,
                name,
                kind,
                audience_id,
                detail="add a recipient",
                advertiser_ids=(advertiser_id,),
                blocked=recipient,
            )
        )
    for advertiser_id in sorted(had - wanted):
        items.append(
            Item(
                "unshare",
                key,
                name,
                kind,
                audience_id,
                detail="stop sharing",
                advertiser_ids=(advertiser_id,),
                blocked=recipient,
            )
        )
    return items


def _follow_sources(
    items: list[Item],
    definitions: Sequence[Definition],
    state: AudienceState,
    ids: dict[str, str],
    remote: Remote,
) -> list[Item]:
    """A lookalike is made from one audience: when its source key is made again (or was
    made again while the lookalike waited), the lookalike is made again from the new one."""
    remade = {
        i.key
        for i in items
        if i.kind == "create" or (i.kind == "update" and i.type != "customer_file")
    }
    lookalikes = {d.key: d for d in definitions if d.type == "lookalike"}
    followed: list[Item] = []
    for item in items:
        definition = lookalikes.get(item.key)
        held = state.audiences.get(item.key)
        if item.kind != "unchanged" or definition is None or held is None:
            followed.append(item)
            continue
        source = str(definition.spec["source"])
        now = ids.get(source, source if source.isdigit() else "")
        if held.source_id is None or (source not in remade and now == held.source_id):
            followed.append(item)
            continue
        adgroups = remote.adgroups.get(str(item.audience_id), ())
        update = replace(
            item,
            kind="update",
            detail=f"its source {source} is made again: so is the lookalike, and the old deleted",
            adgroups=adgroups,
            blocked=_applied(adgroups, "made again"),
        )
        followed.append(_source_check(update, definition, ids, remote))
    return followed


def _source_check(item: Item, definition: Definition, ids: dict[str, str], remote: Remote) -> Item:
    """A lookalike cannot be made from an audience another advertiser shares with this
    one (TikTok's sharing rules): its create or re-making is blocked."""
    if item.kind not in ("create", "update") or item.blocked:
        return item
    source = str(definition.spec["source"])
    source_id = ids.get(source, source if source.isdigit() else "")
    found = remote.audiences.get(source_id)
    if found is None or found.owned:
        return item
    return replace(
        item,
        blocked=f"its source {source} (audience {source_id}) is shared with this advertiser "
        "by its owner: a recipient cannot make a lookalike of it",
    )


def _change(
    definition: Definition, held: Held, digest: str, *, now: float, named: str
) -> tuple[str, str] | None:
    """What changed since the last apply (detail, blocked reason), or None. ``named`` is
    the audience's name at TikTok."""
    if definition.type == "customer_file":
        if definition.fingerprint() == held.fingerprint and digest == held.file_md5:
            return None
        if named and named != definition.name:
            # the update endpoint sends a file, not a name: sending the file again with
            # its action would remove or replace people to change nothing but the name
            return "renamed", (
                f"renaming a customer file audience is not supported (TikTok calls it "
                f"{named!r}): give the file its old name back"
            )
        action = str(definition.spec["action"])
        detail = (
            f"the file changed: {action}" if digest != held.file_md5 else f"redefined: {action}"
        )
        if action == "replace" and held.last_replace_at is not None:
            left = held.last_replace_at + facts.REPLACE_WINDOW_SECONDS - now
            if left > 0:
                hours, minutes = divmod(int(left // 60), 60)
                return detail, (
                    f"TikTok allows one replace a day: the last was sent "
                    f"{_ago(now - held.last_replace_at)} ago, try again in {hours} h {minutes} min"
                )
        return detail, ""
    if definition.fingerprint() == held.fingerprint:
        return None
    if definition.type == "partner":
        return "renamed", (
            "a partner audience is the sync's: renaming it through the API is not supported; "
            "give the file its old name back"
        )
    return "redefined: TikTok cannot edit its rules, so it is made again and the old deleted", ""


def _ago(seconds: float) -> str:
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours} h {minutes} min"


def _applied(adgroups: tuple[str, ...], what: str) -> str:
    if not adgroups:
        return ""
    return (
        f"applied to ad groups {', '.join(adgroups)}: it cannot be {what} until disconnected "
        "(tiktok-audiences audiences disconnect)"
    )


def _check_limit(items: Sequence[Item], remote: Remote) -> None:
    """TikTok's 400 custom audiences per advertiser: a plan that goes over stops."""
    creates = sum(item.kind == "create" for item in items)
    deletes = sum(  # only an audience TikTok still holds, and this advertiser's, frees room
        item.kind == "delete"
        and not item.blocked
        and (found := remote.audiences.get(str(item.audience_id))) is not None
        and found.owned
        for item in items
    )
    after = remote.owned() + creates - deletes
    if creates and after > facts.MAX_AUDIENCES:
        raise ConfigurationError(
            f"this plan would make {after} custom audiences; TikTok allows "
            f"{facts.MAX_AUDIENCES} per advertiser ({remote.owned()} now, {creates} to create, "
            f"{deletes} to delete): remove definitions, or delete audiences first"
        )
