"""Audience definition files: read, checked whole, and turned into TikTok request bodies.

A folder holds one audience per ``*.json`` file (``schemas/audience-definition.schema.json``).
Every file is checked before any call is made, in two steps: the JSON Schema (shape,
names, key pattern, share ids), then TikTok's documented rules from ``facts``, which the
schema does not repeat so they live in one place: the actions and lookbacks an asset
type offers, app events, rules per rule set, videos per rule, one TikTok account per
rule set, customer files that exist, lookalike sources that are defined and are not
lookalikes. Keys are unique across the folder. Every problem is a ``MappingError``
naming the file, the JSON pointer and the reason (exit 3 through the CLI).

The type's object is kept with the schema's defaults filled in, so writing a default out
(``"auto_refresh": true``) is not a change of the definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from destination.errors import MappingError
from destination.kit.mapping import check_depth
from destination.kit.schema import DocumentValidator
from destination.resources import load_schema
from destination.tiktok.dmp.facts import (
    APP_AUDIENCE_TYPE,
    APP_EVENTS,
    APP_LOOKBACK_DAYS,
    ENGAGEMENT_ASSET_TYPES,
    LOOKALIKE_OS,
    LOOKALIKE_SIZES,
    MAX_RULES,
    MAX_VIDEOS,
    AssetType,
)

__all__ = [
    "AudienceType",
    "Definition",
    "load_definitions",
    "lookalike_create_body",
    "rule_create_body",
]

AudienceType = Literal["engagement", "app_activity", "customer_file", "lookalike", "partner"]

SCHEMA_FILE = "audience-definition.schema.json"


@dataclass(frozen=True)
class Definition:
    """One audience as its file declares it (checked).

    ``key`` is its identity in the state file (TikTok allows duplicate names);
    ``spec`` is the object named by ``type``, defaults filled in; ``path`` is the file,
    for messages and for paths written relative to it.
    """

    key: str
    name: str
    type: AudienceType
    share_with: tuple[str, ...]
    spec: Mapping[str, Any]
    path: Path

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of (type, name, spec): it changes exactly when
        what TikTok holds should change. Shares are planned on their own, and a customer
        file's content is compared by its MD5, so neither is part of it; nor are a
        customer file's ``path`` (the MD5 tells another file) and ``action`` (how a
        changed file is sent: a new action alone must not send the same file again)."""
        spec = self.spec
        if self.type == "customer_file":
            spec = {k: v for k, v in spec.items() if k not in ("path", "action")}
        canonical = json.dumps(
            {"type": self.type, "name": self.name, "spec": _sets_sorted(spec)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


#: Lists of ids that are sets (unique in the schema): their order means nothing to TikTok.
_ID_SETS = ("assets", "locations")


def _sets_sorted(value: Any) -> Any:
    """``value`` with every ``_ID_SETS`` list sorted, for a fingerprint that does not change
    when the same ids are written in another order."""
    if isinstance(value, Mapping):
        return {
            k: sorted(v) if k in _ID_SETS and isinstance(v, list) else _sets_sorted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_sets_sorted(item) for item in value]
    return value


def load_definitions(directory: Path) -> list[Definition]:
    """Every definition of ``directory`` (its ``*.json`` files), checked, sorted by key."""
    if not directory.is_dir():
        raise MappingError(str(directory), "", "a folder of audience definition files (*.json)")
    schema = load_schema(SCHEMA_FILE)
    validator = DocumentValidator(schema)
    definitions = [_read(path, validator, schema) for path in sorted(directory.glob("*.json"))]
    by_key: dict[str, Definition] = {}
    for definition in definitions:
        first = by_key.setdefault(definition.key, definition)
        if first is not definition:
            raise MappingError(
                str(definition.path),
                "/key",
                f"a key no other file uses; {first.path} also has key {definition.key!r}",
            )
    for definition in definitions:
        if definition.type == "lookalike":
            _check_lookalike_source(definition, by_key)
    return sorted(definitions, key=lambda d: d.key)


def rule_create_body(definition: Definition, advertiser_id: str) -> dict[str, Any]:
    """The body of ``POST dmp/custom_audience/rule/create/`` for an engagement or app
    activity definition. The exclusion rule set is left out when there are no exclusion
    rules; people matching any exclusion rule are left out (``OR``)."""
    spec = definition.spec
    if definition.type == "engagement":
        asset = ENGAGEMENT_ASSET_TYPES[spec["asset_type"]]
        audience_type = asset.audience_type

        def wire(rule: Mapping[str, Any]) -> dict[str, Any]:
            return _engagement_rule(spec, asset, rule)

    elif definition.type == "app_activity":
        audience_type = APP_AUDIENCE_TYPE

        def wire(rule: Mapping[str, Any]) -> dict[str, Any]:
            return _rule([spec["app_id"]], rule["lookback_days"], APP_EVENTS[rule["event"]])

    else:
        raise ValueError(f"{definition.key}: a {definition.type} audience has no rules")
    rule_spec: dict[str, Any] = {
        "inclusion_rule_set": {
            "operator": spec["operator"].upper(),
            "rules": [wire(rule) for rule in spec["rules"]],
        }
    }
    if spec["exclude"]:
        rule_spec["exclusion_rule_set"] = {
            "operator": "OR",
            "rules": [wire(rule) for rule in spec["exclude"]],
        }
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": definition.name,
        "audience_type": audience_type,
        "is_auto_refresh": spec["auto_refresh"],
        "rule_spec": rule_spec,
    }


def lookalike_create_body(
    definition: Definition, advertiser_id: str, source_audience_id: str
) -> dict[str, Any]:
    """The body of ``POST dmp/custom_audience/lookalike/create/``; ``source_audience_id``
    is the source's TikTok id (a definition key is resolved through the state first)."""
    if definition.type != "lookalike":
        raise ValueError(f"{definition.key}: a {definition.type} audience is not a lookalike")
    spec = definition.spec
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": definition.name,
        "lookalike_spec": {
            "source_audience_id": source_audience_id,
            "audience_size": LOOKALIKE_SIZES[spec["size"]],
            "include_source": spec["include_source"],
            "location_ids": list(spec["locations"]),
            "mobile_os": LOOKALIKE_OS[spec["os"]],
        },
    }


def _engagement_rule(
    spec: Mapping[str, Any], asset: AssetType, rule: Mapping[str, Any]
) -> dict[str, Any]:
    wired = _rule(
        rule.get("assets", spec["assets"]), rule["lookback_days"], asset.actions[rule["action"]]
    )
    if asset.video_assets:
        wired["identity_id"] = rule.get("account", spec.get("account"))
    return wired


def _rule(source_ids: Sequence[str], days: int, code: str) -> dict[str, Any]:
    return {
        "event_source_ids": list(source_ids),
        "retention_days": days,
        "filter_set": {
            "operator": "OR",
            "filters": [{"field": "ACTION", "operator": "IN", "values": [code]}],
        },
    }


def _read(path: Path, validator: DocumentValidator, schema: Mapping[str, Any]) -> Definition:
    source = str(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(source, "", f"a readable UTF-8 file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise MappingError(
            source, "", f"valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError:  # deeper than the JSON reader can go (about 1,000 levels)
        raise MappingError(source, "", "a definition nested far less deeply") from None
    check_depth(document, source=source)  # before the schema check, which recurses
    validator.check(document, source=source)
    kind = cast(AudienceType, document["type"])
    for other in get_args(AudienceType):
        if other != kind and other in document:
            raise _error(path, f"/{other}", f"no {other} object in a {kind} definition")
    spec = _with_defaults(document[kind], schema["$defs"], kind)
    check = _CHECKS.get(kind)
    if check is not None:  # lookalikes are checked across the folder; partners hold nothing
        check(spec, path)
    return Definition(
        key=document["key"],
        name=document["name"],
        type=kind,
        share_with=tuple(document.get("share_with", ())),
        spec=spec,
        path=path,
    )


def _with_defaults(spec: Mapping[str, Any], defs: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``spec`` with the defaults the schema declares for its type's properties, on the
    property or on the ``$defs`` entry it refers to (declared once, used by two types)."""
    defaults: dict[str, Any] = {}
    for name, prop in defs[kind].get("properties", {}).items():
        declared = defs[prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else {}
        if "default" in prop or "default" in declared:
            defaults[name] = prop.get("default", declared.get("default"))
    return {**defaults, **spec}


def _check_engagement(spec: Mapping[str, Any], path: Path) -> None:
    asset = ENGAGEMENT_ASSET_TYPES[spec["asset_type"]]
    if "account" in spec and not asset.video_assets:
        raise _error(path, "/engagement/account", _no_account(asset))
    _check_asset_count(spec["assets"], asset, path, "/engagement/assets")
    for rule_set in ("rules", "exclude"):
        rules: Sequence[Mapping[str, Any]] = spec[rule_set]
        pointer = f"/engagement/{rule_set}"
        _check_rule_count(rules, path, pointer)
        first_account: tuple[str, str] | None = None  # (account, where it is named)
        for index, rule in enumerate(rules):
            at = f"{pointer}/{index}"
            action = rule["action"]
            if action not in asset.actions:
                raise _error(
                    path,
                    f"{at}/action",
                    f"an action of {asset.name}: one of {', '.join(asset.actions)}; got {action!r}",
                )
            _check_lookback(
                rule["lookback_days"],
                asset.lookback_days,
                f"action {action!r} of {asset.name}",
                path,
                at,
            )
            if "assets" in rule:
                _check_asset_count(rule["assets"], asset, path, f"{at}/assets")
            if not asset.video_assets:
                if "account" in rule:
                    raise _error(path, f"{at}/account", _no_account(asset))
                continue
            if not rule.get("assets", spec["assets"]):
                raise _error(
                    path, at, f"{asset.name} ids (in /engagement/assets or this rule's assets)"
                )
            named_at = f"{at}/account" if "account" in rule else "/engagement/account"
            account = rule.get("account", spec.get("account"))
            if account is None:
                raise _error(
                    path,
                    at,
                    f"the TikTok account of the {asset.name} (in /engagement/account or "
                    "this rule's account)",
                )
            if first_account is None:
                first_account = (account, named_at)
            elif account != first_account[0]:
                raise _error(
                    path,
                    f"{at}/account" if "account" in rule else at,
                    f"one TikTok account per rule set: {first_account[1]} names "
                    f"{first_account[0]!r}, this rule {account!r}",
                )


def _check_app_activity(spec: Mapping[str, Any], path: Path) -> None:
    for rule_set in ("rules", "exclude"):
        rules: Sequence[Mapping[str, Any]] = spec[rule_set]
        pointer = f"/app_activity/{rule_set}"
        _check_rule_count(rules, path, pointer)
        for index, rule in enumerate(rules):
            at = f"{pointer}/{index}"
            event = rule["event"]
            if event not in APP_EVENTS:
                raise _error(
                    path,
                    f"{at}/event",
                    f"an app event: one of {', '.join(APP_EVENTS)}; got {event!r}",
                )
            _check_lookback(rule["lookback_days"], APP_LOOKBACK_DAYS, f"event {event!r}", path, at)


def _check_customer_file(spec: Mapping[str, Any], path: Path) -> None:
    file = path.parent / spec["path"]
    if not file.is_file():
        raise _error(path, "/customer_file/path", f"an existing file; there is no {file}")
    # the schema asks a CSV for at least one identifier column (a device type comes with
    # advertising ids); a TXT file has one value per line and no device type column
    if file.suffix == ".txt" and list(spec["columns"]) not in (["email"], ["phone"]):
        raise _error(
            path,
            "/customer_file/columns",
            "one identifier kind for a TXT file (one value per line): email or phone; "
            "a CSV file can hold several, and advertising ids with their device type",
        )


_CHECKS: Mapping[str, Callable[[Mapping[str, Any], Path], None]] = {
    "engagement": _check_engagement,
    "app_activity": _check_app_activity,
    "customer_file": _check_customer_file,
}


def _check_lookalike_source(definition: Definition, by_key: Mapping[str, Definition]) -> None:
    source = definition.spec["source"]
    if source.isdigit():  # an audience id; TikTok checks it is not a lookalike itself
        return
    target = by_key.get(source)
    if target is None:
        raise _error(
            definition.path,
            "/lookalike/source",
            f"the key of a definition in this folder or an audience id (digits); no file "
            f"has key {source!r}",
        )
    if target.type == "lookalike":
        raise _error(
            definition.path,
            "/lookalike/source",
            f"a source that is not itself a lookalike; {target.path} ({source!r}) is one",
        )


def _check_rule_count(rules: Sequence[object], path: Path, pointer: str) -> None:
    if len(rules) > MAX_RULES:
        raise _error(
            path,
            pointer,
            f"at most {MAX_RULES} rules in a rule set (TikTok's limit); got {len(rules)}",
        )


def _check_asset_count(assets: Sequence[str], asset: AssetType, path: Path, pointer: str) -> None:
    if asset.video_assets and len(assets) > MAX_VIDEOS:
        raise _error(
            path,
            pointer,
            f"at most {MAX_VIDEOS} {asset.name} ids per rule (TikTok's limit); got {len(assets)}",
        )


def _check_lookback(
    days: int, offered: Sequence[int], what: str, path: Path, rule_pointer: str
) -> None:
    if days not in offered:
        raise _error(
            path,
            f"{rule_pointer}/lookback_days",
            f"a lookback that {what} offers: {', '.join(map(str, offered))} days; got {days}",
        )


def _no_account(asset: AssetType) -> str:
    return (
        f"no account: {asset.name} rules take ad group ids; an account names the owner of "
        "public or LIVE videos"
    )


def _error(path: Path, pointer: str, expected: str) -> MappingError:
    return MappingError(str(path), pointer, expected)
