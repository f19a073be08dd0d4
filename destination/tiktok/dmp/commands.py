"""``tiktok-audiences audiences plan | apply | import | apply-to-adgroup | disconnect``.

The definitions are read and checked whole before anything else (a bad file exits 3
naming it and the JSON pointer), then the advertiser's audiences and ad groups are
listed, and the plan made. ``plan`` prints it: a table, then as the last line JSON with
the counts (``create``, ``update``, ``share``, ``unshare``, ``delete``, ``unchanged``) and
the items. ``apply`` prints the same plan, carries it out and prints what it did.
Connecting is ``audiences list``'s (``manage.connect``): the token a sync would use, the
advertiser from ``--advertiser-id``, ``TIKTOK_ADVERTISER_ID`` or the stored token.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from destination.errors import ConfigurationError, MisconfiguredError, PermanentError
from destination.kit.settings import resolve
from destination.tiktok.dmp import facts
from destination.tiktok.dmp.apply import apply_plan
from destination.tiktok.dmp.definitions import Definition, load_definitions
from destination.tiktok.dmp.plan import (
    Plan,
    Remote,
    customer_file_path,
    fetch_remote,
    file_md5,
    make_plan,
)
from destination.tiktok.dmp.state import AudienceState, Held, changing, state_path_for
from destination.tiktok.manage import Connection, ManageOptions, connect, print_table, refused
from destination.tiktok.settings import TIKTOK_SETTINGS, Settings

__all__ = [
    "audiences_apply",
    "audiences_import",
    "audiences_link",
    "audiences_plan",
]

_COLUMNS = ("KIND", "KEY", "TYPE", "AUDIENCE", "DETAIL")

# what TikTok lists each definition type as: an import of another type is refused, since
# apply would send it what only its own type takes (a file update to a rule audience...)
_LISTED_AS = {
    "customer_file": "Customer File",
    "engagement": "Engagement",
    "app_activity": "App Activity",
    "lookalike": "Lookalike",
    "partner": "Partner",
}


def _definitions(directory: Path) -> list[Definition]:
    if not directory.is_dir():
        raise ConfigurationError(f"--dir {directory} is not a folder of audience definitions")
    return load_definitions(directory)


def _print_plan(plan: Plan, options: ManageOptions) -> None:
    rows = [list(_COLUMNS)]
    for item in plan.items:
        if item.kind == "unchanged":
            continue
        detail = item.detail
        if item.advertiser_ids:
            detail += f" ({', '.join(item.advertiser_ids)})"
        if item.blocked:
            detail += f" BLOCKED: {item.blocked}"
        rows.append([item.kind, item.key, item.type, item.audience_id or "(new)", detail])
    print_table(rows, options.out)
    counts = plan.counts()
    print(
        "plan: "
        + ", ".join(
            f"{counts[k]} to {k}" if k != "unchanged" else f"{counts[k]} unchanged" for k in counts
        ),
        file=options.err,
    )
    for warning in plan.warnings:
        print(f"warning: {warning}", file=options.err)


class _Planned(NamedTuple):
    """A plan with what it was made from (``apply`` carries it out with them)."""

    plan: Plan
    definitions: list[Definition]
    connection: Connection
    state: AudienceState
    remote: Remote


def _plan(options: ManageOptions, directory: Path, *, prune: bool) -> _Planned:
    definitions = _definitions(directory)
    connection = connect(options)
    state = AudienceState.load(state_path_for(directory), connection.advertiser_id)
    try:
        remote = fetch_remote(connection.api, connection.advertiser_id)
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    plan = make_plan(definitions, state, remote, prune=prune)
    return _Planned(plan, definitions, connection, state, remote)


def audiences_plan(options: ManageOptions, directory: Path, *, prune: bool) -> None:
    """Print what ``apply`` would do; nothing is changed."""
    plan = _plan(options, directory, prune=prune).plan
    _print_plan(plan, options)
    options.out.write(json.dumps(plan.to_json(), sort_keys=True) + "\n")


def audiences_apply(options: ManageOptions, directory: Path, *, prune: bool) -> None:
    """Make TikTok hold what the definitions say, recording it in the state file."""
    with changing(state_path_for(directory)):
        _apply(options, directory, prune=prune)


def _apply(options: ManageOptions, directory: Path, *, prune: bool) -> None:
    plan, definitions, connection, state, remote = _plan(options, directory, prune=prune)
    _print_plan(plan, options)
    settings = Settings.from_values(
        resolve(TIKTOK_SETTINGS, {}, environ=options.environ, flags={}), token=None
    )
    with tempfile.TemporaryDirectory(prefix="tiktok-audiences-upload-") as work:
        try:
            applied = apply_plan(
                plan,
                definitions,
                api=connection.api,
                state=state,
                remote=remote,
                settings=settings,
                work=Path(work),
            )
        except (PermanentError, MisconfiguredError) as exc:
            raise refused(exc) from exc
    for item in applied.done:
        shown = f" {', '.join(item.advertiser_ids)}" if item.advertiser_ids else ""
        print(f"{item.kind}: {item.key}{shown}", file=options.err)
    for warning in applied.warnings:
        print(f"warning: {warning}", file=options.err)
    done: dict[str, int] = {}
    for item in applied.done:
        done[item.kind] = done.get(item.kind, 0) + 1
    document = {
        "applied": done,
        "deferred": [i.key for i in applied.deferred],
        "state": str(state.path),
        "audiences": {k: h.audience_id for k, h in sorted(state.audiences.items())},
        "warnings": [*plan.warnings, *applied.warnings],
    }
    options.out.write(json.dumps(document, sort_keys=True) + "\n")


def audiences_import(options: ManageOptions, directory: Path, key: str, audience_id: str) -> None:
    """Adopt an existing audience as definition ``key``: the state records it as applied
    (a later plan shares it as defined, and changes nothing else)."""
    with changing(state_path_for(directory)):
        _import(options, directory, key, audience_id)


def _import(options: ManageOptions, directory: Path, key: str, audience_id: str) -> None:
    definitions = {d.key: d for d in _definitions(directory)}
    definition = definitions.get(key)
    if definition is None:
        raise ConfigurationError(f"no definition in {directory} has the key {key!r}")
    if not audience_id.isdigit():
        raise ConfigurationError(f"not an audience id (digits only): {audience_id!r}")
    connection = connect(options)
    state = AudienceState.load(state_path_for(directory), connection.advertiser_id)
    held = state.audiences.get(key)
    if held is not None and held.audience_id != audience_id:
        raise ConfigurationError(
            f"{key} is audience {held.audience_id} already; remove it from the definitions "
            "and apply --prune first, or pick another key"
        )
    details = _details(connection, audience_id)
    listed = details.get("type")
    if listed and listed != _LISTED_AS[definition.type]:
        raise ConfigurationError(
            f"audience {audience_id} is a {listed} audience at TikTok, and {key} defines a "
            f"{definition.type} one ({_LISTED_AS[definition.type]}): import it under a "
            "definition of its type"
        )
    digest = (
        file_md5(customer_file_path(definition)) if definition.type == "customer_file" else None
    )
    state.audiences[key] = Held(
        audience_id,
        definition.type,
        definition.fingerprint(),
        shared_with=[],
        file_md5=digest,
    )
    state.save()
    options.out.write(
        json.dumps({"imported": key, "audience_id": audience_id, "name": details.get("name")})
        + "\n"
    )


def _details(connection: Connection, audience_id: str) -> Mapping[str, Any]:
    try:
        found = connection.api.get_audiences(connection.advertiser_id, [audience_id])
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    details = found[0].get("audience_details") if found else None
    if not isinstance(details, dict):
        raise ConfigurationError(f"TikTok has no audience {audience_id} for this advertiser")
    return details


def audiences_link(
    options: ManageOptions,
    directory: Path | None,
    audience: str,
    adgroup_ids: Sequence[str],
    *,
    exclude: bool,
    disconnect: bool,
) -> None:
    """Apply an audience (a definition's key with ``--dir``, or an id) to ad groups, or
    disconnect it; applying one TikTok cannot target yet warns with its size."""
    connection = connect(options)
    audience_id = audience
    if not audience.isdigit():
        if directory is None:
            raise ConfigurationError(f"{audience!r} is not an audience id: give --dir to use keys")
        state = AudienceState.load(state_path_for(directory), connection.advertiser_id)
        held = state.audiences.get(audience)
        if held is None:
            raise ConfigurationError(f"the state of {directory} has no audience {audience!r}")
        audience_id = held.audience_id
    details = _details(connection, audience_id)
    size = int(details.get("cover_num") or 0)
    if not disconnect and size < facts.MIN_TARGETABLE:
        print(
            f"warning: audience {audience_id} holds {size} users; TikTok targets with it from "
            f"{facts.MIN_TARGETABLE:,} on",
            file=options.err,
        )
    try:
        connection.api.apply_audience(
            connection.advertiser_id,
            audience_id,
            list(adgroup_ids),
            mode="Disconnect" if disconnect else "Apply",
            usage="Exclude" if exclude else "Include",
        )
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    options.out.write(
        json.dumps(
            {
                "audience_id": audience_id,
                "adgroup_ids": list(adgroup_ids),
                "action": "disconnect" if disconnect else "apply",
                "usage": "exclude" if exclude else "include",
                "size": size,
            }
        )
        + "\n"
    )
