"""``audiences apply``: carry out a plan, step by step, recording each step in the state.

Nothing is sent while any item of the plan is blocked (the reasons are listed). Then, in
an order TikTok can follow: audiences are created (lookalikes last, once their source
exists and holds the 100 users TikTok asks of a seed; a source still filling leaves the
lookalike for a later apply, with a warning), updated (a customer file with its explicit
action, never TikTok's default REPLACE; a rule or lookalike audience made again, shared
again, and the old one deleted), shared, unshared, and, with ``--prune``, deleted. The
state is saved after every step, so an apply stopped half-way is finished by the next one
and a second apply changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from destination.errors import ConfigurationError
from destination.tiktok.api import TikTokApi, UpdateAction
from destination.tiktok.dmp import facts
from destination.tiktok.dmp.customer_file import prepare_customer_file
from destination.tiktok.dmp.definitions import (
    Definition,
    lookalike_create_body,
    rule_create_body,
)
from destination.tiktok.dmp.plan import Item, Plan, Remote, customer_file_path
from destination.tiktok.dmp.state import AudienceState, Held
from destination.tiktok.settings import Settings

__all__ = ["Applied", "apply_plan"]

_UPLOAD_ACTIONS: dict[str, UpdateAction] = {
    "append": "APPEND",
    "remove": "REMOVE",
    "replace": "REPLACE",
}


@dataclass
class Applied:
    """What an apply did: the items carried out, those left for later, and warnings."""

    done: list[Item] = field(default_factory=list)
    deferred: list[Item] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Run:
    api: TikTokApi
    state: AudienceState
    remote: Remote
    settings: Settings
    work: Path
    clock: Callable[[], float]
    applied: Applied
    definitions: dict[str, Definition]


def apply_plan(
    plan: Plan,
    definitions: Sequence[Definition],
    *,
    api: TikTokApi,
    state: AudienceState,
    remote: Remote,
    settings: Settings,
    work: Path,
    clock: Callable[[], float] = time.time,
) -> Applied:
    """Carry out ``plan`` (see the module's docstring); ``work`` holds the upload files."""
    blocked = plan.blocked
    if blocked:
        reasons = "; ".join(f"{item.key} ({item.kind}): {item.blocked}" for item in blocked)
        raise ConfigurationError(f"nothing applied: {len(blocked)} blocked: {reasons}")
    run = _Run(
        api, state, remote, settings, work, clock, Applied(), {d.key: d for d in definitions}
    )
    made_again: set[str] = set()
    not_made: set[str] = set()  # creates deferred: the state may still hold a gone audience
    order = {"create": 0, "update": 1, "share": 2, "unshare": 3, "delete": 4}
    steps = sorted(
        (i for i in plan.items if i.kind != "unchanged"),
        # lookalikes made (or made again) after the audiences they may be made from
        key=lambda i: (order[i.kind], i.type == "lookalike"),
    )
    for item in steps:
        if item.kind in ("share", "unshare") and item.key in made_again:
            continue  # the new audience was shared as defined when it was made
        if item.kind == "share" and (item.key not in state.audiences or item.key in not_made):
            continue  # its audience could not be made in this apply (see deferred)
        step = _STEPS[item.kind]
        if step(run, item):
            run.applied.done.append(item)
            if item.kind == "update" and item.type != "customer_file":
                made_again.add(item.key)
        else:
            run.applied.deferred.append(item)
            if item.kind == "create":
                not_made.add(item.key)
        state.save()
    return run.applied


def _create(run: _Run, item: Item) -> bool:
    definition = run.definitions[item.key]
    audience_id = _make(run, definition)
    if audience_id is None:
        return False
    run.state.audiences[item.key] = Held(
        audience_id=audience_id,
        type=definition.type,
        fingerprint=definition.fingerprint(),
        shared_with=[],
        file_md5=item.file_md5 or None,
        source_id=_source_id(run, definition),
    )
    return True


def _make(run: _Run, definition: Definition) -> str | None:
    """Create the audience ``definition`` describes; its id, or None when a lookalike's
    source is not ready yet."""
    api, advertiser_id = run.api, run.state.advertiser_id
    if definition.type == "customer_file":
        path = _upload(run, definition)
        return api.create_customer_file_audience(advertiser_id, definition.name, [path])
    if definition.type in ("engagement", "app_activity"):
        return api.create_rule_audience(rule_create_body(definition, advertiser_id))
    if definition.type == "partner":
        return api.create_segment_audience(advertiser_id, definition.name)
    source = _lookalike_source(run, definition)
    if source is None:
        return None
    return api.create_lookalike(lookalike_create_body(definition, advertiser_id, source))


def _source_id(run: _Run, definition: Definition) -> str | None:
    """A lookalike's source audience id now (its key's in the state, or the id given)."""
    if definition.type != "lookalike":
        return None
    source = str(definition.spec["source"])
    held = run.state.audiences.get(source)
    return held.audience_id if held else source if source.isdigit() else None


def _lookalike_source(run: _Run, definition: Definition) -> str | None:
    """The source audience's id, once it exists and holds TikTok's minimum of users."""
    source = str(definition.spec["source"])
    audience_id = _source_id(run, definition)
    if audience_id is None:
        run.applied.warnings.append(
            f"{definition.key}: its source {source} could not be made: the lookalike waits"
        )
        return None
    [details] = run.api.get_audiences(run.state.advertiser_id, [audience_id]) or [{}]
    info = details.get("audience_details", {}) if isinstance(details, dict) else {}
    size = int(info.get("cover_num") or 0)
    if not info.get("is_creator", True):
        raise ConfigurationError(
            f"{definition.path}: source {source} is shared with this advertiser: a recipient "
            "cannot make a lookalike of it"
        )
    if size < facts.MIN_LOOKALIKE_SOURCE:
        run.applied.warnings.append(
            f"{definition.key}: its source {source} (audience {audience_id}) holds {size} "
            f"users; TikTok makes a lookalike from {facts.MIN_LOOKALIKE_SOURCE} on: apply "
            "again once it has filled (24-48 h)"
        )
        return None
    return audience_id


def _upload(run: _Run, definition: Definition) -> str:
    prepared = prepare_customer_file(
        definition, customer_file_path(definition), run.settings, work=run.work
    )
    if prepared.skipped:
        run.applied.warnings.append(
            f"{definition.key}: {prepared.skipped} rows of {prepared.read} had no usable "
            "identifier and were left out"
        )
    return run.api.upload_audience_file(run.state.advertiser_id, prepared.path, prepared.md5)


def _update(run: _Run, item: Item) -> bool:
    definition = run.definitions[item.key]
    held = run.state.audiences[item.key]
    if definition.type == "customer_file":
        action = _UPLOAD_ACTIONS[str(definition.spec["action"])]
        path = _upload(run, definition)
        run.api.update_customer_file_audience(
            run.state.advertiser_id, held.audience_id, action, [path]
        )
        held.fingerprint = definition.fingerprint()
        held.file_md5 = item.file_md5 or None
        if action == "REPLACE":
            held.last_replace_at = run.clock()
        return True
    # TikTok cannot edit a rule or lookalike audience: make it again, share it, delete the old
    audience_id = _make(run, definition)
    if audience_id is None:
        return False
    old = held.audience_id
    made = Held(
        audience_id,
        definition.type,
        definition.fingerprint(),
        source_id=_source_id(run, definition),
        replaced=[*held.replaced, old],
    )
    run.state.audiences[item.key] = made
    run.state.save()
    _share(run, item.key, list(definition.share_with))
    run.state.save()
    run.api.delete_audiences(run.state.advertiser_id, [old])
    made.replaced.remove(old)
    return True


def _share(run: _Run, key: str, advertiser_ids: list[str]) -> None:
    held = run.state.audiences[key]
    for start in range(0, len(advertiser_ids), facts.MAX_SHARE_IDS):
        chunk = advertiser_ids[start : start + facts.MAX_SHARE_IDS]
        run.api.share_audiences(run.state.advertiser_id, [held.audience_id], chunk)
        held.shared_with = sorted({*held.shared_with, *chunk})


def _share_item(run: _Run, item: Item) -> bool:
    _share(run, item.key, list(item.advertiser_ids))
    return True


def _unshare(run: _Run, item: Item) -> bool:
    held = run.state.audiences[item.key]
    for advertiser_id in item.advertiser_ids:
        run.api.cancel_share(run.state.advertiser_id, held.audience_id, advertiser_id)
        held.shared_with = [a for a in held.shared_with if a != advertiser_id]
    return True


def _delete(run: _Run, item: Item) -> bool:
    held = run.state.audiences[item.key]
    audience_id = item.audience_id or held.audience_id
    if audience_id in run.remote.audiences:
        run.api.delete_audiences(run.state.advertiser_id, [audience_id])
    if audience_id in held.replaced:  # an old audience of a key made again
        held.replaced.remove(audience_id)
    else:
        del run.state.audiences[item.key]
    return True


_STEPS: dict[str, Callable[[_Run, Item], bool]] = {
    "create": _create,
    "update": _update,
    "share": _share_item,
    "unshare": _unshare,
    "delete": _delete,
}
