"""The fake TikTok's custom audience (DMP) model (issue 17): each audience type, sizes that
grow on the fake clock, customer files, rules, lookalikes, Business Center sharing with
seed 002's rights and stop-sharing tables, ad groups, and TikTok's limits.

Driven in-process through ``ApiRequest`` (as ``tests/test_fake_server.py`` does); the
multipart upload also over real HTTP.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.fake_server.multipart import MultipartError, read_form
from destination.kit.settings import Secret
from destination.tiktok.api import API_VERSION, TikTokApi, tiktok_backend
from tests.clock import HANG_GUARD, FakeClock

TOKEN = "tok-dmp-owner"
OWNER = "adv-1"
RECIPIENT = "adv-2"
NEIGHBOUR = "adv-4"  # the same Business Center as OWNER
OUTSIDER = "adv-3"  # another Business Center
HOUR = 3600.0
DMP = "dmp/custom_audience/"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def emails(count: int, start: int = 0) -> list[str]:
    return [sha(f"user{n}@example.com") for n in range(start, start + count)]


# ------------------------------------------------------------------------ plumbing


def post(fake: FakeTikTok, path: str, body: dict[str, Any]) -> ApiResponse:
    return fake.send(ApiRequest("POST", path, json=body, headers={"Access-Token": TOKEN}))


def get(fake: FakeTikTok, path: str, params: dict[str, str]) -> ApiResponse:
    return fake.send(ApiRequest("GET", path, params=params, headers={"Access-Token": TOKEN}))


def ok(response: ApiResponse) -> dict[str, Any]:
    assert response.body is not None, response.text
    assert response.body["code"] == 0, response.body
    data: dict[str, Any] = response.body["data"]
    return data


def refused(response: ApiResponse, code: int, *needles: str) -> str:
    assert response.body is not None, response.text
    assert response.body["code"] == code, response.body
    message: str = response.body["message"]
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0)


@pytest.fixture
def fake(clock: FakeClock) -> FakeTikTok:
    fake = FakeTikTok(clock=clock)
    fake.add_advertiser(OWNER, "Owner", business_center_id="bc-1")
    fake.add_advertiser(RECIPIENT, "Agency", business_center_id="bc-1")
    fake.add_advertiser(NEIGHBOUR, "Sister brand", business_center_id="bc-1")
    fake.add_advertiser(OUTSIDER, "Elsewhere", business_center_id="bc-2")
    fake.add_token(TOKEN, [OWNER, RECIPIENT, NEIGHBOUR, OUTSIDER])
    return fake


def write_file(
    folder: Path, rows: list[list[str]], header: str = "EMAIL_SHA256", name: str = "people.csv"
) -> tuple[Path, str]:
    path = folder / name
    path.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def upload_request(
    path: Path, signature: str, advertiser_id: str = OWNER, **fields: str
) -> ApiRequest:
    params = {
        "advertiser_id": advertiser_id,
        "file_signature": signature,
        "calculate_type": "MULTIPLE_TYPES",
        **fields,
    }
    return ApiRequest(
        "POST",
        DMP + "file/upload/",
        params=params,
        headers={"Access-Token": TOKEN},
        files={"file": (path.name, path)},
    )


def upload(fake: FakeTikTok, folder: Path, hashes: list[str], advertiser_id: str = OWNER) -> str:
    path, signature = write_file(folder, [[h] for h in hashes])
    file_path = ok(fake.send(upload_request(path, signature, advertiser_id)))["file_path"]
    assert isinstance(file_path, str)
    return file_path


def file_create_body(
    file_path: str, name: str = "Customers", advertiser_id: str = OWNER
) -> dict[str, Any]:
    """A ``dmp/custom_audience/create/`` body from one uploaded file."""
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": name,
        "calculate_type": "MULTIPLE_TYPES",
        "file_paths": [file_path],
    }


def create_file_audience(
    fake: FakeTikTok, folder: Path, hashes: list[str], advertiser_id: str = OWNER
) -> str:
    file_path = upload(fake, folder, hashes, advertiser_id)
    body = file_create_body(file_path, advertiser_id=advertiser_id)
    audience_id = ok(post(fake, DMP + "create/", body))["custom_audience_id"]
    assert isinstance(audience_id, str)
    return audience_id


def update_body(audience_id: str, file_path: str, action: str | None) -> dict[str, Any]:
    body = {"advertiser_id": OWNER, "custom_audience_id": audience_id, "file_paths": [file_path]}
    return body if action is None else {**body, "action": action}


def rule(sources: list[str], days: int, *codes: str, identity: str | None = None) -> dict[str, Any]:
    wired: dict[str, Any] = {
        "event_source_ids": sources,
        "retention_days": days,
        "filter_set": {
            "operator": "OR",
            "filters": [{"field": "ACTION", "operator": "IN", "values": list(codes)}],
        },
    }
    if identity is not None:
        wired["identity_id"] = identity
    return wired


def rule_body(audience_type: str, *rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "advertiser_id": OWNER,
        "custom_audience_name": f"{audience_type} audience",
        "audience_type": audience_type,
        "rule_spec": {"inclusion_rule_set": {"operator": "OR", "rules": list(rules)}},
        **extra,
    }


VIDEO_ADS = rule_body(
    "ENGAGEMENT",
    rule(["1790000000000000001"], 30, "VIDEO_VIEW_100"),
    rule([], 180, "CLICK"),
    is_auto_refresh=False,
)
PUBLIC_VIDEOS = rule_body(
    "ENGAGEMENT_ORGANIC_VIDEO", rule(["v1", "v2"], 14, "ENGAGEMENT", identity="acct-1")
)
LIVE_VIDEOS = rule_body(
    "ENGAGEMENT_LIVE_VIDEO", rule(["room-1"], 7, "LIVE_VIEW", identity="acct-1")
)
APP_ACTIVITY = rule_body("APP", rule(["app-1"], 90, "PURCHASE", "ADD_TO_CART"))


def create_rule_audience(fake: FakeTikTok, body: dict[str, Any], target: int | None = None) -> str:
    audience_id = ok(post(fake, DMP + "rule/create/", body))["custom_audience_id"]
    assert isinstance(audience_id, str)
    if target is not None:
        fake.set_target_size(audience_id, target)
    return audience_id


def lookalike_body(
    source: str, advertiser_id: str = OWNER, size: str = "BALANCED"
) -> dict[str, Any]:
    return {
        "advertiser_id": advertiser_id,
        "custom_audience_name": "Like our buyers",
        "lookalike_spec": {
            "source_audience_id": source,
            "audience_size": size,
            "include_source": False,
            "location_ids": ["6252001"],
            "mobile_os": "ALL",
        },
    }


def details(fake: FakeTikTok, audience_id: str, advertiser_id: str = OWNER) -> dict[str, Any]:
    params = {"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps([audience_id])}
    (item,) = ok(get(fake, DMP + "get/", params))["list"]
    found: dict[str, Any] = item["audience_details"]
    return found


def listed(fake: FakeTikTok, advertiser_id: str) -> list[dict[str, Any]]:
    params = {"advertiser_id": advertiser_id, "page_size": "100"}
    found: list[dict[str, Any]] = ok(get(fake, DMP + "list/", params))["list"]
    return found


def share(fake: FakeTikTok, ids: list[str], to: list[str], by: str = OWNER) -> ApiResponse:
    body = {"advertiser_id": by, "custom_audience_ids": ids, "shared_advertiser_ids": to}
    return post(fake, DMP + "share/", body)


def cancel(fake: FakeTikTok, audience_id: str, recipient: str, by: str = OWNER) -> ApiResponse:
    body = {
        "advertiser_id": by,
        "custom_audience_id": audience_id,
        "shared_advertiser_id": recipient,
    }
    return post(fake, DMP + "share/cancel/", body)


def apply(
    fake: FakeTikTok,
    advertiser_id: str,
    audience_id: str,
    adgroup_id: str,
    mode: str = "Apply",
    usage: str = "Include",
) -> ApiResponse:
    body = {
        "advertiser_id": advertiser_id,
        "custom_audience_id": audience_id,
        "adgroup_ids": [adgroup_id],
        "action_mode": mode,
        "usage_mode": usage,
    }
    return post(fake, DMP + "apply/", body)


def delete(fake: FakeTikTok, audience_id: str, advertiser_id: str = OWNER) -> ApiResponse:
    body = {"advertiser_id": advertiser_id, "custom_audience_ids": [audience_id]}
    return post(fake, DMP + "delete/", body)


# ------------------------------------------------------- each type, growing over time


@pytest.mark.parametrize(
    ("kind", "audience_type", "body"),
    [
        ("video ads", "Engagement", VIDEO_ADS),
        ("public videos", "Engagement", PUBLIC_VIDEOS),
        ("LIVE videos", "Engagement", LIVE_VIDEOS),
        ("app activity", "App Activity", APP_ACTIVITY),
    ],
)
def test_a_rule_audience_fills_over_24_to_48_hours_to_its_target(
    fake: FakeTikTok, clock: FakeClock, kind: str, audience_type: str, body: dict[str, Any]
) -> None:
    audience_id = create_rule_audience(fake, body, target=5_000)
    created = details(fake, audience_id)
    assert created["type"] == audience_type, kind
    assert created["rule"] == {
        "audience_type": body["audience_type"],
        "rule_spec": body["rule_spec"],
    }
    assert created["is_auto_refresh"] is body.get("is_auto_refresh", True)
    assert (created["cover_num"], created["is_valid"], created["is_creator"]) == (0, False, True)
    clock.now += 12 * HOUR
    halfway = details(fake, audience_id)["cover_num"]
    assert 5_000 * 12 / 48 <= halfway <= 5_000 * 12 / 24
    clock.now += 36 * HOUR
    full = details(fake, audience_id)
    assert (full["cover_num"], full["is_valid"]) == (5_000, True)
    assert fake.cover_num(audience_id) == 5_000


def test_a_rule_audience_has_a_deterministic_target_unless_a_test_sets_one(
    clock: FakeClock,
) -> None:
    sizes = []
    for _ in range(2):
        fake = FakeTikTok(clock=clock)
        fake.add_advertiser(OWNER)
        fake.add_token(TOKEN, [OWNER])
        audience_id = create_rule_audience(fake, VIDEO_ADS)
        clock.now += 48 * HOUR
        sizes.append(fake.cover_num(audience_id))
    assert sizes[0] == sizes[1] >= 10_000


def test_a_customer_file_audience_holds_its_distinct_rows_and_fills_over_time(
    fake: FakeTikTok, clock: FakeClock, tmp_path: Path
) -> None:
    hashes = emails(1_200)
    audience_id = create_file_audience(fake, tmp_path, hashes + hashes[:10])  # 10 twice
    found = details(fake, audience_id)
    assert (found["type"], found["calculate_type"], found["cover_num"]) == (
        "Customer File",
        "MULTIPLE_TYPES",
        0,
    )
    clock.now += 48 * HOUR
    assert details(fake, audience_id)["cover_num"] == 1_200
    assert details(fake, audience_id)["is_valid"] is True
    assert fake.members(audience_id) == {"EMAIL_SHA256": set(hashes)}


def test_a_lookalike_grows_to_its_source_size_times_1_3_or_10(
    fake: FakeTikTok, clock: FakeClock
) -> None:
    source = create_rule_audience(fake, APP_ACTIVITY, target=400)
    clock.now += 48 * HOUR
    made = {
        size: ok(post(fake, DMP + "lookalike/create/", lookalike_body(source, size=size)))[
            "custom_audience_id"
        ]
        for size in ("NARROW", "BALANCED", "BROAD")
    }
    assert details(fake, made["BROAD"])["type"] == "Lookalike"
    assert details(fake, made["BROAD"])["lookalike_spec"]["source_audience_id"] == source
    assert [fake.cover_num(a) for a in made.values()] == [0, 0, 0]
    clock.now += 48 * HOUR
    assert [fake.cover_num(a) for a in made.values()] == [400, 1_200, 4_000]
    # Refreshing follows the source's size now.
    fake.set_target_size(source, 1_000)
    body = {"advertiser_id": OWNER, "custom_audience_id": made["NARROW"]}
    ok(post(fake, DMP + "lookalike/update/", body))
    assert fake.cover_num(made["NARROW"]) == 1_000


def test_a_partner_audience_keeps_its_members_as_its_size(fake: FakeTikTok) -> None:
    audience_id = fake.add_audience(OWNER, "streamed")
    found = details(fake, audience_id)
    assert (found["type"], found["cover_num"], found["is_valid"]) == ("Partner", 0, True)
    with pytest.raises(ValueError, match="members"):
        fake.set_target_size(audience_id, 5)


# -------------------------------------------------------------- seed 002: rights


@pytest.fixture
def shared(fake: FakeTikTok, clock: FakeClock, tmp_path: Path) -> dict[str, str]:
    """A customer file audience (1,200 people) and a lookalike of it, both shared by
    OWNER with RECIPIENT; a spare file of 1,100 other people; everything full."""
    file_audience = create_file_audience(fake, tmp_path, emails(1_200))
    clock.now += 48 * HOUR
    lookalike = ok(post(fake, DMP + "lookalike/create/", lookalike_body(file_audience)))[
        "custom_audience_id"
    ]
    ok(share(fake, [file_audience, lookalike], [RECIPIENT]))
    spare = upload(fake, tmp_path, emails(1_100, start=5_000))
    return {"file": file_audience, "lookalike": lookalike, "spare": spare}


# Each row of seed 002's table that the recipient may not do: (advertiser, ids) -> request
RIGHTS: dict[str, Callable[[str, dict[str, str]], tuple[str, dict[str, Any]]]] = {
    "add": lambda by, ids: (
        "update/",
        {**update_body(ids["file"], ids["spare"], "APPEND"), "advertiser_id": by},
    ),
    "remove": lambda by, ids: (
        "update/",
        {**update_body(ids["file"], ids["spare"], "REMOVE"), "advertiser_id": by},
    ),
    "replace": lambda by, ids: (
        "update/",
        {**update_body(ids["file"], ids["spare"], "REPLACE"), "advertiser_id": by},
    ),
    "rename": lambda by, ids: (
        "update/",
        {"advertiser_id": by, "custom_audience_id": ids["file"], "custom_audience_name": "New"},
    ),
    "share": lambda by, ids: (
        "share/",
        {
            "advertiser_id": by,
            "custom_audience_ids": [ids["file"]],
            "shared_advertiser_ids": [NEIGHBOUR],
        },
    ),
    "stop sharing": lambda by, ids: (
        "share/cancel/",
        {"advertiser_id": by, "custom_audience_id": ids["file"], "shared_advertiser_id": RECIPIENT},
    ),
    "create lookalike": lambda by, ids: ("lookalike/create/", lookalike_body(ids["file"], by)),
    "refresh lookalike": lambda by, ids: (
        "lookalike/update/",
        {"advertiser_id": by, "custom_audience_id": ids["lookalike"]},
    ),
}


@pytest.mark.parametrize("action", list(RIGHTS))
def test_rights_table_only_the_owner_may(
    fake: FakeTikTok, shared: dict[str, str], action: str
) -> None:
    before = fake.audiences()
    size = fake.cover_num(shared["file"])
    path, body = RIGHTS[action](RECIPIENT, shared)
    refused(post(fake, DMP + path, body), 40001, "a recipient can only apply it to ad groups")
    assert fake.audiences() == before
    assert fake.cover_num(shared["file"]) == size
    path, body = RIGHTS[action](OWNER, shared)
    ok(post(fake, DMP + path, body))


def test_rights_table_the_recipient_sees_and_applies_a_shared_audience(
    fake: FakeTikTok, shared: dict[str, str]
) -> None:
    seen = {a["audience_id"]: a for a in listed(fake, RECIPIENT)}
    assert set(seen) == {shared["file"], shared["lookalike"]}
    assert seen[shared["file"]]["is_creator"] is False
    assert seen[shared["file"]]["shared"] is True
    assert seen[shared["file"]]["owner_id"] == OWNER
    assert details(fake, shared["file"])["shared"] is True  # the owner sees it is shared
    assert listed(fake, NEIGHBOUR) == []
    adgroup = fake.add_adgroup(RECIPIENT)
    ok(apply(fake, RECIPIENT, shared["file"], adgroup))
    ok(apply(fake, RECIPIENT, shared["lookalike"], adgroup, usage="Exclude"))
    assert fake.adgroup_targeting(adgroup) == {
        "audience_ids": [shared["file"]],
        "excluded_audience_ids": [shared["lookalike"]],
    }


def test_rights_table_delete_by_the_recipient_removes_it_from_its_list_only(
    fake: FakeTikTok, shared: dict[str, str]
) -> None:
    ok(delete(fake, shared["file"], RECIPIENT))
    assert [a["audience_id"] for a in listed(fake, RECIPIENT)] == [shared["lookalike"]]
    assert details(fake, shared["file"])["cover_num"] == 1_200  # the owner's is untouched
    ok(delete(fake, shared["lookalike"], OWNER))
    assert listed(fake, RECIPIENT) == []
    assert [a.audience_id for a in fake.audiences() if a.deleted] == [shared["lookalike"]]


# ------------------------------------------------------- seed 002: stop sharing


@pytest.mark.parametrize(
    ("usage", "applied", "left"),
    [
        ("Include", "A", []),
        ("Exclude", "A", []),
        ("Include", "ABC", ["B", "C"]),
        ("Exclude", "ABC", ["B", "C"]),
    ],
)
def test_stop_sharing_table(fake: FakeTikTok, usage: str, applied: str, left: list[str]) -> None:
    audiences = {name: create_rule_audience(fake, APP_ACTIVITY) for name in "ABC"}
    ok(share(fake, list(audiences.values()), [RECIPIENT, NEIGHBOUR]))
    adgroup = fake.add_adgroup(RECIPIENT, "Recipient's")
    elsewhere = fake.add_adgroup(NEIGHBOUR, "Another recipient's")
    for name in applied:
        ok(apply(fake, RECIPIENT, audiences[name], adgroup, usage=usage))
        ok(apply(fake, NEIGHBOUR, audiences[name], elsewhere, usage=usage))

    ok(cancel(fake, audiences["A"], RECIPIENT))

    key = "audience_ids" if usage == "Include" else "excluded_audience_ids"
    targeting = fake.adgroup_targeting(adgroup)
    assert targeting[key] == [audiences[name] for name in left]
    other = "excluded_audience_ids" if usage == "Include" else "audience_ids"
    assert targeting[other] == []  # with only "A": no audience targeting left
    listed_groups = ok(get(fake, "adgroup/get/", {"advertiser_id": RECIPIENT}))["list"]
    assert listed_groups[0][key] == targeting[key]
    assert audiences["A"] not in {a["audience_id"] for a in listed(fake, RECIPIENT)}
    refused(apply(fake, RECIPIENT, audiences["A"], adgroup), 40001)
    # Only that recipient stopped: the other keeps A.
    assert fake.adgroup_targeting(elsewhere)[key] == [audiences[name] for name in applied]


def test_stop_sharing_what_is_not_shared_is_refused(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    refused(cancel(fake, audience_id, RECIPIENT), 40002, "is not shared with advertiser adv-2")


# ------------------------------------------------------------------- sharing


def test_sharing_outside_the_business_center_is_refused(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    message = refused(share(fake, [audience_id], [RECIPIENT, OUTSIDER]), 40002)
    assert "adv-3 is not in the Business Center of advertiser adv-1" in message
    assert listed(fake, RECIPIENT) == []  # nothing shared when one recipient is refused
    refused(share(fake, [audience_id], ["adv-404"]), 40007, "adv-404 does not exist")
    refused(share(fake, [audience_id], [OWNER]), 40002, "owns the audiences")


def test_share_takes_1_to_10_audiences_and_advertisers(fake: FakeTikTok) -> None:
    ids = [create_rule_audience(fake, APP_ACTIVITY) for _ in range(11)]
    refused(share(fake, ids, [RECIPIENT]), 40011, "custom_audience_ids: 11 > 10")
    refused(share(fake, [], [RECIPIENT]), 40002)
    refused(share(fake, ids[:1], [RECIPIENT] * 11), 40011, "shared_advertiser_ids: 11 > 10")
    ok(share(fake, ids[:10], [RECIPIENT, NEIGHBOUR]))
    assert len(listed(fake, NEIGHBOUR)) == 10


def test_sharing_needs_the_share_scope(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    fake.add_token(TOKEN, [OWNER], scopes=[30, 31])
    refused(share(fake, [audience_id], [RECIPIENT]), 40001, "scope 32")


# -------------------------------------------------------------------- limits


def test_400_audiences_per_advertiser_on_every_create(
    fake: FakeTikTok, clock: FakeClock, tmp_path: Path
) -> None:
    source = create_rule_audience(fake, APP_ACTIVITY, target=500)
    clock.now += 48 * HOUR
    file_path = upload(fake, tmp_path, emails(10))
    partners = [fake.add_audience(OWNER, f"p{n}") for n in range(399)]
    creates = {
        "rule/create/": APP_ACTIVITY,
        "lookalike/create/": lookalike_body(source),
        "create/": file_create_body(file_path, "file"),
    }
    for path, body in creates.items():
        refused(post(fake, DMP + path, body), 40002, "limit of 400 custom audiences")
    assert len(fake.audiences()) == 400
    ok(delete(fake, partners[0]))
    ok(post(fake, DMP + "rule/create/", APP_ACTIVITY))


def test_an_applied_audience_cannot_be_deleted_until_disconnected(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    ok(share(fake, [audience_id], [RECIPIENT]))
    mine = fake.add_adgroup(OWNER, "Mine")
    theirs = fake.add_adgroup(RECIPIENT, "Theirs")
    ok(apply(fake, OWNER, audience_id, mine, usage="Exclude"))
    ok(apply(fake, RECIPIENT, audience_id, theirs))
    refused(delete(fake, audience_id), 40002, f"applied to ad group(s) {mine}", "disconnect")
    segment_delete = {"advertiser_id": OWNER, "action": "delete", "delete_audience_id": audience_id}
    refused(post(fake, "segment/audience/", segment_delete), 40002, "disconnect")
    refused(delete(fake, audience_id, RECIPIENT), 40002, f"applied to ad group(s) {theirs}")
    assert not any(a.deleted for a in fake.audiences())

    ok(apply(fake, OWNER, audience_id, mine, mode="Disconnect", usage="Exclude"))
    ok(delete(fake, audience_id))
    # The owner deleting it disconnects the recipients' ad groups, as stopping sharing does.
    assert fake.adgroup_targeting(theirs) == {"audience_ids": [], "excluded_audience_ids": []}


def test_a_lookalike_source_needs_100_users_and_is_no_lookalike(
    fake: FakeTikTok, clock: FakeClock
) -> None:
    source = create_rule_audience(fake, APP_ACTIVITY, target=99)
    clock.now += 48 * HOUR
    message = refused(post(fake, DMP + "lookalike/create/", lookalike_body(source)), 40002)
    assert message == f"Audience {source} has 99 users; a lookalike's source needs at least 100"
    fake.set_target_size(source, 100)
    lookalike = ok(post(fake, DMP + "lookalike/create/", lookalike_body(source)))
    clock.now += 48 * HOUR
    of_lookalike = lookalike_body(lookalike["custom_audience_id"])
    refused(post(fake, DMP + "lookalike/create/", of_lookalike), 40002, "must not be a lookalike")


def test_an_update_may_not_take_a_file_audience_under_1000(
    fake: FakeTikTok, tmp_path: Path
) -> None:
    audience_id = create_file_audience(fake, tmp_path, emails(1_200))
    too_many = upload(fake, tmp_path, emails(201))
    message = refused(
        post(fake, DMP + "update/", update_body(audience_id, too_many, "REMOVE")), 40002
    )
    assert "REMOVE would leave audience" in message and "with 999 users" in message
    small = upload(fake, tmp_path, emails(999, start=10_000))
    refused(post(fake, DMP + "update/", update_body(audience_id, small, "REPLACE")), 40002, "999")
    assert len(fake.members(audience_id)["EMAIL_SHA256"]) == 1_200
    just_enough = upload(fake, tmp_path, emails(200))
    ok(post(fake, DMP + "update/", update_body(audience_id, just_enough, "REMOVE")))
    assert fake.members(audience_id)["EMAIL_SHA256"] == set(emails(1_000, start=200))
    ok(post(fake, DMP + "update/", update_body(audience_id, just_enough, "APPEND")))
    assert len(fake.members(audience_id)["EMAIL_SHA256"]) == 1_200


def test_one_replace_per_24_hours_and_update_defaults_to_replace(
    fake: FakeTikTok, clock: FakeClock, tmp_path: Path
) -> None:
    audience_id = create_file_audience(fake, tmp_path, emails(1_200))
    other = upload(fake, tmp_path, emails(1_100, start=50_000))
    ok(post(fake, DMP + "update/", update_body(audience_id, other, None)))  # TikTok's default
    assert fake.members(audience_id)["EMAIL_SHA256"] == set(emails(1_100, start=50_000))
    clock.now += 23 * HOUR + 30 * 60
    again = post(fake, DMP + "update/", update_body(audience_id, other, "REPLACE"))
    refused(again, 40002, "one REPLACE is allowed per 24 hours: try again in 0 h 30 min")
    ok(post(fake, DMP + "update/", update_body(audience_id, other, "APPEND")))  # not a replace
    clock.now += 30 * 60
    ok(post(fake, DMP + "update/", update_body(audience_id, other, "REPLACE")))


def test_update_refuses_what_it_cannot_do(fake: FakeTikTok, tmp_path: Path) -> None:
    rule_audience = create_rule_audience(fake, APP_ACTIVITY)
    file_audience = create_file_audience(fake, tmp_path, emails(1_200))
    theirs = upload(fake, tmp_path, emails(1_200), advertiser_id=NEIGHBOUR)
    refused(
        post(fake, DMP + "update/", update_body(rule_audience, theirs, "APPEND")),
        40002,
        "App Activity audience; only customer file audiences",
    )
    refused(
        post(fake, DMP + "update/", update_body(file_audience, theirs, "APPEND")),
        40002,
        "is not a file advertiser adv-1 uploaded",
    )
    refused(
        post(fake, DMP + "update/", update_body(file_audience, theirs, "MERGE")),
        40002,
        "APPEND, REMOVE, REPLACE",
    )
    bare = {"advertiser_id": OWNER, "custom_audience_id": file_audience}
    refused(post(fake, DMP + "update/", bare), 40002, "nothing to update")
    rename = {**bare, "custom_audience_name": "Renamed"}
    ok(post(fake, DMP + "update/", rename))
    assert details(fake, file_audience)["name"] == "Renamed"


# --------------------------------------------------------------- rule bodies


def _mutated(body: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copied = copy.deepcopy(body)
    change(copied)
    return copied


def _first_rule(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["rule_spec"]["inclusion_rule_set"]["rules"][0]
    return found


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown action",
        _mutated(
            VIDEO_ADS, lambda b: _first_rule(b)["filter_set"]["filters"][0].update(values=["LIKE"])
        ),
        "'LIKE' is not an action or event of this audience type",
    ),
    (
        "action of another asset type",
        _mutated(
            LIVE_VIDEOS,
            lambda b: _first_rule(b)["filter_set"]["filters"][0].update(values=["CLICK"]),
        ),
        "'CLICK' is not an action",
    ),
    (
        "lookback the action does not offer",
        _mutated(PUBLIC_VIDEOS, lambda b: _first_rule(b).update(retention_days=60)),
        "retention_days 60 is not offered for ENGAGEMENT (ENGAGEMENT_ORGANIC_VIDEO): "
        "one of 7, 14, 30",
    ),
    (
        "six rules",
        _mutated(
            APP_ACTIVITY,
            lambda b: b["rule_spec"]["inclusion_rule_set"].update(
                rules=[rule(["app-1"], 30, "INSTALL")] * 6
            ),
        ),
        "inclusion_rule_set has 6 rules; at most 5 are allowed",
    ),
    (
        "six exclusion rules",
        _mutated(
            APP_ACTIVITY,
            lambda b: b["rule_spec"].update(
                exclusion_rule_set={"operator": "OR", "rules": [rule(["app-1"], 7, "PURCHASE")] * 6}
            ),
        ),
        "exclusion_rule_set has 6 rules",
    ),
    (
        "51 videos",
        _mutated(
            PUBLIC_VIDEOS,
            lambda b: _first_rule(b).update(event_source_ids=[f"v{n}" for n in range(51)]),
        ),
        "has 51 videos; 1 to 50 are allowed",
    ),
    (
        "two TikTok accounts",
        _mutated(
            PUBLIC_VIDEOS,
            lambda b: b["rule_spec"]["inclusion_rule_set"]["rules"].append(
                rule(["v9"], 7, "VIDEO_VIEW_2S", identity="acct-2")
            ),
        ),
        "names 2 TikTok accounts (identity_id)",
    ),
    (
        "no account for public videos",
        _mutated(PUBLIC_VIDEOS, lambda b: _first_rule(b).pop("identity_id")),
        "identity_id is required",
    ),
    (
        "an account on video ads",
        _mutated(VIDEO_ADS, lambda b: _first_rule(b).update(identity_id="acct-1")),
        "identity_id is only for public and LIVE video audiences",
    ),
    (
        "unknown app event",
        _mutated(
            APP_ACTIVITY,
            lambda b: _first_rule(b)["filter_set"]["filters"][0].update(values=["DANCE"]),
        ),
        "'DANCE' is not an action or event",
    ),
    (
        "two apps in a rule",
        _mutated(
            APP_ACTIVITY, lambda b: _first_rule(b).update(event_source_ids=["app-1", "app-2"])
        ),
        "exactly one app id",
    ),
    (
        "bad operator",
        _mutated(
            APP_ACTIVITY, lambda b: b["rule_spec"]["inclusion_rule_set"].update(operator="XOR")
        ),
        "operator must be AND or OR",
    ),
    (
        "filter on another field",
        _mutated(
            APP_ACTIVITY, lambda b: _first_rule(b)["filter_set"]["filters"][0].update(field="URL")
        ),
        '"field": "ACTION"',
    ),
    (
        "no inclusion rule set",
        _mutated(APP_ACTIVITY, lambda b: b["rule_spec"].pop("inclusion_rule_set")),
        "inclusion_rule_set is required",
    ),
    (
        "unknown audience type",
        _mutated(APP_ACTIVITY, lambda b: b.update(audience_type="PIXEL")),
        "audience_type must be one of APP, ENGAGEMENT",
    ),
    (
        "name over 128 characters",
        _mutated(APP_ACTIVITY, lambda b: b.update(custom_audience_name="n" * 129)),
        "custom_audience_name has 129 characters; at most 128",
    ),
]


@pytest.mark.parametrize(("case", "body", "reason"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_rule_create_refuses_what_tiktok_refuses(
    fake: FakeTikTok, case: str, body: dict[str, Any], reason: str
) -> None:
    refused(post(fake, DMP + "rule/create/", body), 40002, reason)
    assert fake.audiences() == [], case


def test_rule_create_accepts_an_exclusion_set_and_the_facts_lookbacks(fake: FakeTikTok) -> None:
    body = _mutated(
        APP_ACTIVITY,
        lambda b: b["rule_spec"].update(
            exclusion_rule_set={"operator": "AND", "rules": [rule(["app-1"], 7, "PURCHASE")]}
        ),
    )
    ok(post(fake, DMP + "rule/create/", body))
    ok(post(fake, DMP + "rule/create/", rule_body("ENGAGEMENT", rule([], 7, "INSTANT_PAGE_VIEW"))))


# ------------------------------------------------------------- customer files


def test_a_wrong_file_signature_is_refused(fake: FakeTikTok, tmp_path: Path) -> None:
    path, signature = write_file(tmp_path, [[h] for h in emails(3)])
    wrong = hashlib.md5(b"something else").hexdigest()
    message = refused(fake.send(upload_request(path, wrong)), 40002)
    assert message == f"file_signature {wrong} does not match the file: its MD5 is {signature}"
    refused(fake.send(upload_request(path, "abc")), 40002, "32 hex characters")


@pytest.mark.parametrize(
    ("header", "rows", "reason"),
    [
        ("EMAIL", [[sha("a")]], "each column must be one of EMAIL_SHA256"),
        ("EMAIL_SHA256,EMAIL_SHA256", [[sha("a"), sha("b")]], "names an id type twice"),
        ("EMAIL_SHA256", [[sha("a").upper()]], "line 2: a EMAIL_SHA256 value is not 64 lowercase"),
        ("EMAIL_SHA256", [["alice@example.com"]], "not 64 lowercase hex"),
        ("EMAIL_SHA256,PHONE_SHA256", [[sha("a")]], "line 2 has 1 values but the header names 2"),
        ("EMAIL_SHA256,PHONE_SHA256", [[sha("a"), ""], ["", ""]], "line 3 has no identifier"),
        ("EMAIL_SHA256", [], "a header but no rows"),
    ],
)
def test_a_malformed_customer_file_is_refused_without_echoing_values(
    fake: FakeTikTok, tmp_path: Path, header: str, rows: list[list[str]], reason: str
) -> None:
    path, signature = write_file(tmp_path, rows, header=header)
    message = refused(fake.send(upload_request(path, signature)), 40002, reason)
    assert "alice" not in message


def test_upload_checks_its_form(fake: FakeTikTok, tmp_path: Path) -> None:
    path, signature = write_file(tmp_path, [[sha("a")]], name="people.xlsx")
    refused(fake.send(upload_request(path, signature)), 40002, "a .csv or .txt file")
    refused(
        fake.send(upload_request(path, signature, calculate_type="EMAIL_SHA256")),
        40002,
        "calculate_type must be MULTIPLE_TYPES",
    )
    no_file = ApiRequest(
        "POST",
        DMP + "file/upload/",
        params={
            "advertiser_id": OWNER,
            "file_signature": signature,
            "calculate_type": "MULTIPLE_TYPES",
        },
        headers={"Access-Token": TOKEN},
    )
    refused(fake.send(no_file), 40002, "file is required")


def test_a_file_with_several_id_types_keeps_each_person_once(
    fake: FakeTikTok, clock: FakeClock, tmp_path: Path
) -> None:
    rows = [[sha(f"e{n}"), sha(f"p{n}") if n % 2 else ""] for n in range(1_000)]
    path, signature = write_file(tmp_path, rows, header="EMAIL_SHA256,PHONE_SHA256")
    file_path = ok(fake.send(upload_request(path, signature)))["file_path"]
    body = file_create_body(file_path, "Two ids")
    audience_id = ok(post(fake, DMP + "create/", body))["custom_audience_id"]
    clock.now += 48 * HOUR
    assert fake.cover_num(audience_id) == 1_000
    assert len(fake.members(audience_id)["PHONE_SHA256"]) == 500


def test_the_upload_over_http_is_multipart_spooled_to_disk(
    fake: FakeTikTok, tmp_path: Path
) -> None:
    hashes = emails(2_000)  # 130 kB: more than one 64 kB chunk of the server's reader
    path, signature = write_file(tmp_path, [[h] for h in hashes])
    fields = {
        "advertiser_id": OWNER,
        "file_signature": signature,
        "calculate_type": "MULTIPLE_TYPES",
    }
    with serve_in_thread(fake) as server, path.open("rb") as handle:
        url = f"{server.base_url}/open_api/{API_VERSION}/{DMP}file/upload/"
        reply = requests.post(
            url,
            data=fields,
            files={"file": ("people.csv", handle, "text/csv")},
            headers={"Access-Token": TOKEN},
            timeout=HANG_GUARD,
        )
        bad_signature = {**fields, "file_signature": "0" * 32}
        handle.seek(0)
        wrong = requests.post(
            url,
            data=bad_signature,
            files={"file": ("people.csv", handle, "text/csv")},
            headers={"Access-Token": TOKEN},
            timeout=HANG_GUARD,
        )
    assert reply.json()["code"] == 0, reply.json()
    assert "does not match the file" in wrong.json()["message"]
    received = fake.requests[0]
    assert dict(received.params) == fields
    name, spooled = received.files["file"]
    assert name == "people.csv"
    assert not spooled.exists()  # the spooled copy is deleted once answered
    body = file_create_body(reply.json()["data"]["file_path"], "Over HTTP")
    audience_id = ok(post(fake, DMP + "create/", body))["custom_audience_id"]
    assert fake.members(audience_id) == {"EMAIL_SHA256": set(hashes)}


def test_the_clients_streamed_upload_reaches_the_fake_over_http(
    fake: FakeTikTok, tmp_path: Path
) -> None:
    hashes = emails(1_500)
    path, signature = write_file(tmp_path, [[h] for h in hashes])
    with serve_in_thread(fake) as server:
        api = TikTokApi(tiktok_backend(server.base_url), Secret(TOKEN))
        file_path = api.upload_audience_file(OWNER, path, signature)
        audience_id = api.create_customer_file_audience(OWNER, "Streamed", [file_path])
    assert fake.members(audience_id) == {"EMAIL_SHA256": set(hashes)}


class _Trickle(io.BytesIO):
    """A connection that hands over at most 7 bytes a read (a boundary split anywhere)."""

    def read(self, size: int | None = -1, /) -> bytes:
        return super().read(min(7, size if size is not None and size >= 0 else 7))


def test_the_multipart_reader_finds_boundaries_split_across_reads(tmp_path: Path) -> None:
    content = b"EMAIL_SHA256\r\n--not-the-boundary\r\n" + b"x" * 100
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="advertiser_id"\r\n\r\nadv-1\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--b0undary--\r\n"
    )
    form = read_form(_Trickle(body), len(body), "b0undary", tmp_path)
    assert form.fields == {"advertiser_id": "adv-1"}
    name, spooled = form.files["file"]
    assert (name, spooled.read_bytes()) == ("a.csv", content)
    form.remove()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MultipartError, match="closing boundary"):
        read_form(_Trickle(body[:-20]), len(body) - 20, "b0undary", tmp_path)
    assert list(tmp_path.iterdir()) == []  # a malformed body leaves no spooled file


# ------------------------------------------------------------ apply, ad groups


def test_apply_refuses_what_it_cannot_do(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    mine = fake.add_adgroup(OWNER)
    theirs = fake.add_adgroup(NEIGHBOUR)
    ok(apply(fake, OWNER, audience_id, mine, usage="Exclude"))
    ok(apply(fake, OWNER, audience_id, mine, usage="Exclude"))  # applying twice: no change
    assert fake.adgroup_targeting(mine)["excluded_audience_ids"] == [audience_id]
    refused(apply(fake, OWNER, audience_id, mine), 40002, "is excluded from ad group", "disconnect")
    refused(apply(fake, OWNER, audience_id, mine, mode="Disconnect"), 40002, "is not included in")
    refused(apply(fake, OWNER, audience_id, theirs), 40001, "ad group")
    refused(apply(fake, OWNER, audience_id, "404"), 40007, "Ad group 404 does not exist")
    refused(apply(fake, OWNER, audience_id, mine, mode="Attach"), 40002, "Apply or Disconnect")
    refused(apply(fake, NEIGHBOUR, audience_id, theirs), 40001, "No permission to operate audience")


def test_adgroup_get_pages_through_the_advertisers_ad_groups(fake: FakeTikTok) -> None:
    audience_id = create_rule_audience(fake, APP_ACTIVITY)
    groups = [fake.add_adgroup(OWNER, f"group {n}") for n in range(3)]
    fake.add_adgroup(NEIGHBOUR)
    ok(apply(fake, OWNER, audience_id, groups[1]))
    data = ok(get(fake, "adgroup/get/", {"advertiser_id": OWNER, "page": "2", "page_size": "2"}))
    assert data["page_info"] == {"page": 2, "page_size": 2, "total_number": 3, "total_page": 2}
    assert data["list"] == [
        {
            "adgroup_id": groups[2],
            "adgroup_name": "group 2",
            "advertiser_id": OWNER,
            "audience_ids": [],
            "excluded_audience_ids": [],
        }
    ]
    first = ok(get(fake, "adgroup/get/", {"advertiser_id": OWNER}))["list"]
    assert first[1]["audience_ids"] == [audience_id]
    refused(get(fake, "adgroup/get/", {"advertiser_id": "adv-9"}), 40001)
