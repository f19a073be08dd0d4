"""Audience definition files (issue 17): the examples load, every rule TikTok documents is
refused before any call with the file, the JSON pointer and the reason, and the request
bodies have the wire shape the fake server checks."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from destination.errors import MappingError
from destination.resources import data_dir, load_schema
from destination.tiktok.dmp import facts
from destination.tiktok.dmp.definitions import (
    Definition,
    load_definitions,
    lookalike_create_body,
    rule_create_body,
)

FIXTURES = data_dir("fixtures") / "audiences"
OWNER = "7000000000000000001"
PARTNER_ADVERTISER = "7000000000000000002"


def _fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return document


def _write(directory: Path, name: str, document: dict[str, Any]) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _by_key(directory: Path) -> dict[str, Definition]:
    return {d.key: d for d in load_definitions(directory)}


def test_example_folder_loads_one_definition_of_each_type_sorted_by_key() -> None:
    definitions = load_definitions(FIXTURES)

    assert [(d.key, d.type) for d in definitions] == [
        ("app-cart-abandoners", "app_activity"),
        ("customers", "customer_file"),
        ("customers-lookalike", "lookalike"),
        ("newsletter-subscribers", "partner"),
        ("public-video-engagers", "engagement"),
        ("video-ad-completers", "engagement"),
    ]
    shared = {d.key: d.share_with for d in definitions if d.share_with}
    assert shared == {
        "customers-lookalike": (PARTNER_ADVERTISER,),
        "newsletter-subscribers": (PARTNER_ADVERTISER,),
        "video-ad-completers": (PARTNER_ADVERTISER,),
    }
    assert all(d.path.parent == FIXTURES for d in definitions)


def test_defaults_are_filled_in_so_the_spec_says_what_tiktok_gets() -> None:
    definitions = _by_key(FIXTURES)

    assert definitions["public-video-engagers"].spec["auto_refresh"] is True
    assert definitions["public-video-engagers"].spec["exclude"] == []
    assert definitions["app-cart-abandoners"].spec["operator"] == "or"
    assert definitions["customers"].spec["delimiter"] == ","


def test_schema_limits_are_the_documented_facts() -> None:
    schema = load_schema("audience-definition.schema.json")

    assert schema["properties"]["share_with"]["maxItems"] == facts.MAX_SHARE_IDS
    assert schema["properties"]["name"]["maxLength"] == facts.MAX_NAME_LENGTH
    engagement = schema["$defs"]["engagement"]["properties"]
    assert engagement["asset_type"]["enum"] == list(facts.ENGAGEMENT_ASSET_TYPES)
    lookalike = schema["$defs"]["lookalike"]["properties"]
    assert lookalike["size"]["enum"] == list(facts.LOOKALIKE_SIZES)
    assert lookalike["os"]["enum"] == list(facts.LOOKALIKE_OS)


def _videos(count: int) -> list[str]:
    return [str(7300000000000000000 + n) for n in range(count)]


def _set(pointer: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A change of the document: ``value`` put at ``pointer`` (created if missing)."""

    def change(document: dict[str, Any]) -> dict[str, Any]:
        *parents, last = pointer.strip("/").split("/")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return document

    return change


def _drop(pointer: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(document: dict[str, Any]) -> dict[str, Any]:
        *parents, last = pointer.strip("/").split("/")
        node: Any = document
        for part in parents:
            node = node[part]
        del node[last]
        return document

    return change


# (fixture, change, JSON pointer of the error, words of its reason)
INVALID = {
    "lookback_the_organic_action_does_not_offer": (
        "public-video-engagers",
        _set("/engagement/rules/1/lookback_days", 60),
        "/engagement/rules/1/lookback_days",
        "a lookback that action 'video_view_6s' of public_videos offers: 7, 14, 30 days; got 60",
    ),
    "lookback_the_ad_action_does_not_offer": (
        "video-ad-completers",
        _set("/engagement/exclude/0/lookback_days", 45),
        "/engagement/exclude/0/lookback_days",
        "7, 14, 30, 60, 90, 180 days; got 45",
    ),
    "lookback_live_videos_do_not_offer": (
        "public-video-engagers",
        lambda d: _set("/engagement/rules", [{"action": "view", "lookback_days": 90}])(
            _set("/engagement/asset_type", "live_videos")(d)
        ),
        "/engagement/rules/0/lookback_days",
        "action 'view' of live_videos offers: 7, 14, 30 days; got 90",
    ),
    "app_lookback_not_offered": (
        "app-cart-abandoners",
        _set("/app_activity/rules/0/lookback_days", 365),
        "/app_activity/rules/0/lookback_days",
        "event 'Add to Cart' offers: 7, 14, 30, 60, 90, 180 days; got 365",
    ),
    "fifty_one_videos": (
        "public-video-engagers",
        _set("/engagement/assets", _videos(51)),
        "/engagement/assets",
        "at most 50 public_videos ids per rule (TikTok's limit); got 51",
    ),
    "fifty_one_videos_in_one_rule": (
        "public-video-engagers",
        _set("/engagement/rules/0/assets", _videos(51)),
        "/engagement/rules/0/assets",
        "at most 50 public_videos ids per rule",
    ),
    "two_tiktok_accounts_in_one_rule_set": (
        "public-video-engagers",
        _set("/engagement/rules/1/account", "6900000000000000002"),
        "/engagement/rules/1/account",
        "one TikTok account per rule set: /engagement/account names '6900000000000000001', "
        "this rule '6900000000000000002'",
    ),
    "video_rule_without_account": (
        "public-video-engagers",
        _drop("/engagement/account"),
        "/engagement/rules/0",
        "the TikTok account of the public_videos",
    ),
    "video_rule_without_videos": (
        "public-video-engagers",
        _drop("/engagement/assets"),
        "/engagement/rules/0",
        "public_videos ids",
    ),
    "account_on_ad_group_assets": (
        "video-ad-completers",
        _set("/engagement/account", "6900000000000000001"),
        "/engagement/account",
        "no account: video_ads rules take ad group ids",
    ),
    "more_rules_than_tiktok_allows": (
        "video-ad-completers",
        _set("/engagement/rules", [{"action": "click", "lookback_days": 7}] * 6),
        "/engagement/rules",
        "at most 5 rules in a rule set (TikTok's limit); got 6",
    ),
    "more_exclusion_rules_than_tiktok_allows": (
        "app-cart-abandoners",
        _set("/app_activity/exclude", [{"event": "Purchase", "lookback_days": 7}] * 6),
        "/app_activity/exclude",
        "at most 5 rules in a rule set",
    ),
    "unknown_action": (
        "video-ad-completers",
        _set("/engagement/rules/0/action", "video_view_99"),
        "/engagement/rules/0/action",
        "an action of video_ads: one of click, impression, video_view_2s",
    ),
    "action_of_another_asset_type": (
        "public-video-engagers",
        _set("/engagement/rules/0/action", "impression"),
        "/engagement/rules/0/action",
        "an action of public_videos: one of video_view_2s, video_view_6s, video_view_100, "
        "engagement; got 'impression'",
    ),
    "unknown_event": (
        "app-cart-abandoners",
        _set("/app_activity/exclude/0/event", "Buy"),
        "/app_activity/exclude/0/event",
        "an app event: one of Install, Launch App,",
    ),
    "key_with_capitals": (
        "customers",
        _set("/key", "Customers"),
        "/key",
        "does not match",
    ),
    "key_of_digits_only": (
        "customers",
        _set("/key", "2024"),
        "/key",
        "does not match",
    ),
    "name_longer_than_tiktok_takes": (
        "customers",
        _set("/name", "x" * 129),
        "/name",
        "is too long",
    ),
    "empty_name": ("customers", _set("/name", ""), "/name", "should be non-empty"),
    "share_id_not_numeric": (
        "video-ad-completers",
        _set("/share_with/0", "agency"),
        "/share_with/0",
        "does not match '^[0-9]{1,20}$'",
    ),
    "share_with_eleven_advertisers": (
        "video-ad-completers",
        _set("/share_with", [str(7000000000000000002 + n) for n in range(11)]),
        "/share_with",
        "is too long",
    ),
    "type_object_missing": (
        "app-cart-abandoners",
        _drop("/app_activity"),
        "",
        "'app_activity' is a required property",
    ),
    "object_of_another_type": (
        "newsletter-subscribers",
        _set("/lookalike", {"source": "customers", "size": "broad", "locations": ["1"]}),
        "/lookalike",
        "no lookalike object in a partner definition",
    ),
    "unknown_type": ("newsletter-subscribers", _set("/type", "pixel"), "/type", "one of"),
    "customer_file_that_does_not_exist": (
        "customers",
        _set("/customer_file/path", "missing.csv"),
        "/customer_file/path",
        "an existing file; there is no",
    ),
    "customer_file_action_left_to_tiktok": (
        "customers",
        _drop("/customer_file/action"),
        "/customer_file",
        "'action' is a required property",
    ),
    "advertising_id_without_device_type": (
        "customers",
        _drop("/customer_file/columns/device_type"),
        "/customer_file/columns",
        "'device_type' is a dependency of 'advertising_id'",
    ),
    "customer_file_delimiter_a_line_end": (
        "customers",
        _set("/customer_file/delimiter", "\n"),
        "/customer_file/delimiter",
        "one of ',', ';', '\\t', '|'",
    ),
    "lookalike_size_unknown": (
        "customers-lookalike",
        _set("/lookalike/size", "huge"),
        "/lookalike/size",
        "one of 'narrow', 'balanced', 'broad', got 'huge'",
    ),
    "lookalike_of_a_key_no_file_defines": (
        "customers-lookalike",
        _set("/lookalike/source", "buyers"),
        "/lookalike/source",
        "no file has key 'buyers'",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_refuses_what_tiktok_would_with_file_pointer_and_reason(case: str, tmp_path: Path) -> None:
    fixture, change, pointer, reason = INVALID[case]
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    path = _write(tmp_path, fixture, change(copy.deepcopy(_fixture(fixture))))

    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path)

    assert (caught.value.source, caught.value.pointer) == (str(path), pointer)
    assert reason in caught.value.expected


def test_refuses_a_txt_customer_file_with_two_identifier_kinds(tmp_path: Path) -> None:
    (tmp_path / "emails.txt").write_text("a@example.com\n", encoding="utf-8")
    document = _fixture("customers")
    document["customer_file"]["path"] = "emails.txt"
    document["customer_file"]["columns"] = {"email": "email", "phone": "phone"}
    path = _write(tmp_path, "customers", document)

    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path)

    assert (caught.value.source, caught.value.pointer) == (str(path), "/customer_file/columns")
    assert "one identifier kind for a TXT file" in caught.value.expected
    document["customer_file"]["columns"] = {"email": "email"}
    _write(tmp_path, "customers", document)
    assert load_definitions(tmp_path)[0].spec["columns"] == {"email": "email"}


def test_refuses_a_lookalike_of_a_lookalike_naming_both_files(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    document = _fixture("customers-lookalike")
    document["key"] = "lookalike-of-lookalike"
    document["lookalike"]["source"] = "customers-lookalike"
    path = _write(tmp_path, "lookalike-of-lookalike", document)

    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path)

    assert (caught.value.source, caught.value.pointer) == (str(path), "/lookalike/source")
    assert caught.value.expected == (
        "a source that is not itself a lookalike; "
        f"{tmp_path / 'customers-lookalike.json'} ('customers-lookalike') is one"
    )


def test_a_lookalike_source_of_digits_is_an_audience_id(tmp_path: Path) -> None:
    document = _fixture("customers-lookalike")
    document["lookalike"]["source"] = "1800000000000000001"
    _write(tmp_path, "customers-lookalike", document)

    (definition,) = load_definitions(tmp_path)

    assert definition.spec["source"] == "1800000000000000001"


def test_refuses_duplicate_keys_naming_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path, "a-partner", _fixture("newsletter-subscribers"))
    second = _write(tmp_path, "b-partner", _fixture("newsletter-subscribers"))

    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path)

    assert (caught.value.source, caught.value.pointer) == (str(second), "/key")
    assert caught.value.expected == (
        f"a key no other file uses; {first} also has key 'newsletter-subscribers'"
    )


def test_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"key": ', encoding="utf-8")

    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path)

    assert (caught.value.source, caught.value.pointer) == (str(path), "")
    assert caught.value.expected.startswith("valid JSON (")


def test_refuses_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as caught:
        load_definitions(tmp_path / "nowhere")

    assert caught.value.source == str(tmp_path / "nowhere")


def _rule(ids: list[str], days: int, code: str) -> dict[str, Any]:
    return {
        "event_source_ids": ids,
        "retention_days": days,
        "filter_set": {
            "operator": "OR",
            "filters": [{"field": "ACTION", "operator": "IN", "values": [code]}],
        },
    }


def test_rule_body_of_video_ad_engagement_is_the_wire_shape() -> None:
    definition = _by_key(FIXTURES)["video-ad-completers"]
    ad_groups = ["1790000000000000001", "1790000000000000002"]

    assert rule_create_body(definition, OWNER) == {
        "advertiser_id": OWNER,
        "custom_audience_name": "Completed our video ads, 30 days",
        "audience_type": "ENGAGEMENT",
        "is_auto_refresh": True,
        "rule_spec": {
            "inclusion_rule_set": {
                "operator": "OR",
                "rules": [
                    _rule(ad_groups, 30, "VIDEO_VIEW_100"),
                    _rule(ad_groups, 30, "CLICK"),
                ],
            },
            "exclusion_rule_set": {"operator": "OR", "rules": [_rule(ad_groups, 7, "CLICK")]},
        },
    }


def test_rule_body_of_public_videos_names_the_account_and_leaves_out_empty_exclusions() -> None:
    definition = _by_key(FIXTURES)["public-video-engagers"]
    videos = ["7300000000000000001", "7300000000000000002", "7300000000000000003"]
    account = {"identity_id": "6900000000000000001"}

    assert rule_create_body(definition, OWNER) == {
        "advertiser_id": OWNER,
        "custom_audience_name": "Liked, shared or commented on our videos, 14 days",
        "audience_type": "ENGAGEMENT_ORGANIC_VIDEO",
        "is_auto_refresh": True,
        "rule_spec": {
            "inclusion_rule_set": {
                "operator": "AND",
                "rules": [
                    {**_rule(videos, 14, "ENGAGEMENT"), **account},
                    {**_rule(videos, 14, "VIDEO_VIEW_6S"), **account},
                ],
            }
        },
    }


def test_rule_body_uses_a_rules_own_assets_and_account(tmp_path: Path) -> None:
    document = _fixture("public-video-engagers")
    document["engagement"]["exclude"] = [
        {
            "action": "video_view_100",
            "lookback_days": 7,
            "assets": ["7400000000000000001"],
            "account": "6900000000000000002",
        }
    ]
    _write(tmp_path, "public-video-engagers", document)
    (definition,) = load_definitions(tmp_path)

    body = rule_create_body(definition, OWNER)

    assert body["rule_spec"]["exclusion_rule_set"] == {
        "operator": "OR",
        "rules": [
            {
                **_rule(["7400000000000000001"], 7, "VIDEO_VIEW_100"),
                "identity_id": "6900000000000000002",
            }
        ],
    }


def test_rule_body_of_app_activity_is_the_wire_shape() -> None:
    definition = _by_key(FIXTURES)["app-cart-abandoners"]
    app = ["6400000000000000001"]

    assert rule_create_body(definition, OWNER) == {
        "advertiser_id": OWNER,
        "custom_audience_name": "Added to cart in the app, no purchase",
        "audience_type": "APP",
        "is_auto_refresh": True,
        "rule_spec": {
            "inclusion_rule_set": {"operator": "OR", "rules": [_rule(app, 30, "ADD_TO_CART")]},
            "exclusion_rule_set": {"operator": "OR", "rules": [_rule(app, 7, "PURCHASE")]},
        },
    }


def test_rule_body_sends_auto_refresh_off_when_the_file_says_so(tmp_path: Path) -> None:
    document = _fixture("app-cart-abandoners")
    document["app_activity"]["auto_refresh"] = False
    _write(tmp_path, "app-cart-abandoners", document)
    (definition,) = load_definitions(tmp_path)

    assert rule_create_body(definition, OWNER)["is_auto_refresh"] is False


def test_lookalike_body_is_the_wire_shape() -> None:
    definition = _by_key(FIXTURES)["customers-lookalike"]

    assert lookalike_create_body(definition, OWNER, "1800000000000000009") == {
        "advertiser_id": OWNER,
        "custom_audience_name": "People like our customers (US)",
        "lookalike_spec": {
            "source_audience_id": "1800000000000000009",
            "audience_size": "BALANCED",
            "include_source": False,
            "location_ids": ["6252001"],
            "mobile_os": "ALL",
        },
    }


def test_bodies_refuse_definitions_of_other_types() -> None:
    definitions = _by_key(FIXTURES)

    with pytest.raises(ValueError, match="has no rules"):
        rule_create_body(definitions["customers-lookalike"], OWNER)
    with pytest.raises(ValueError, match="is not a lookalike"):
        lookalike_create_body(definitions["customers"], OWNER, "1")


def test_fingerprint_is_the_sha256_of_canonical_type_name_and_spec() -> None:
    definition = _by_key(FIXTURES)["newsletter-subscribers"]
    canonical = '{"name":"Newsletter subscribers","spec":{},"type":"partner"}'

    assert definition.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


def _fingerprint_after(tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> str:
    document = _fixture("video-ad-completers")
    change(document)
    # keys written in another order: the same definition
    reordered = dict(reversed(list(document.items())))
    _write(tmp_path, "video-ad-completers", reordered)
    (definition,) = load_definitions(tmp_path)
    return definition.fingerprint()


def test_fingerprint_is_stable_and_ignores_shares_and_written_out_defaults(
    tmp_path: Path,
) -> None:
    original = _by_key(FIXTURES)["video-ad-completers"].fingerprint()

    assert _by_key(FIXTURES)["video-ad-completers"].fingerprint() == original
    assert _fingerprint_after(tmp_path, lambda d: None) == original
    assert _fingerprint_after(tmp_path, lambda d: d.pop("share_with")) == original
    assert _fingerprint_after(tmp_path, lambda d: d["engagement"].pop("auto_refresh")) == original
    assert _fingerprint_after(tmp_path, lambda d: d["engagement"].pop("operator")) == original


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(name="Completed our video ads, 60 days"),
        lambda d: d["engagement"]["rules"][0].update(lookback_days=60),
        lambda d: d["engagement"].update(auto_refresh=False),
        lambda d: d["engagement"].update(operator="and"),
        lambda d: d["engagement"]["assets"].pop(),
    ],
    ids=["name", "lookback", "auto_refresh", "operator", "assets"],
)
def test_fingerprint_changes_when_what_tiktok_holds_should(
    change: Callable[[dict[str, Any]], Any], tmp_path: Path
) -> None:
    original = _by_key(FIXTURES)["video-ad-completers"].fingerprint()

    assert _fingerprint_after(tmp_path, change) != original
