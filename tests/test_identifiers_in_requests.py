"""Each identifier rule, seen where it matters: in the segment/mapping body TikTok receives.

The normalizers have their own table tests (``test_normalize.py``); these run whole events
through the native mapping file and the in-process fake TikTok, then read the request
bodies the fake kept. Expected hashes are computed here with ``hashlib``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from destination.fake_server import FakeTikTok
from destination.runner.sync import SyncOptions, run_sync

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "mappings" / "segment-native.json"
ADVERTISER = "7000000000000000001"
TOKEN = "identifier-test-token"

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
AAID = "38400000-8CF0-11BD-B23E-10B96E40000D"
ZEROED = "00000000-0000-0000-0000-000000000000"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Sent:
    """What one run sent: the users of every segment/mapping call, and its summary."""

    users: list[dict[str, str]]  # id type -> hash, one dict per row
    bodies: list[dict[str, Any]]
    summary: dict[str, Any]
    rejected: list[dict[str, Any]]
    fake: FakeTikTok


def event(
    *,
    traits: dict[str, Any] | None = None,
    device: dict[str, Any] | None = None,
    audience_id: str,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "personas": {
            "computation_key": "vip_customers",
            "external_audience_id": audience_id,
            "audience_settings": {"advertiserId": ADVERTISER},
        },
        "traits": traits or {},
    }
    if device is not None:
        context["device"] = device
    return {"type": "track", "event": "Audience Entered", "userId": "u1", "context": context}


def send(
    tmp_path: Path,
    *users: dict[str, Any],
    settings: dict[str, Any] | None = None,
    mapping: dict[str, Any] | None = None,
) -> Sent:
    """Sync one 'Audience Entered' event per user (``traits`` / ``device``) to the fake."""
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER])
    audience_id = fake.add_audience(ADVERTISER, "vip")

    document = json.loads(NATIVE.read_text("utf-8"))
    document["settings"].update({"qps": 0, "retry_initial_wait": 0, **(settings or {})})
    for subscription in document["subscriptions"]:
        subscription["mapping"].update(mapping or {})
    mapping_path = tmp_path / "mapping.json"
    mapping_path.write_text(json.dumps(document), "utf-8")
    events = tmp_path / "events.ndjson"
    events.write_text(
        "".join(json.dumps(event(audience_id=audience_id, **user)) + "\n" for user in users),
        "utf-8",
    )
    rejected = tmp_path / "rejected.ndjson"

    summary = run_sync(
        SyncOptions(
            mapping=mapping_path,
            events=str(events),
            rejected=rejected,
            overrides={"audience_state": tmp_path / "audiences.json"},
        ),
        environ={
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        },
        backend=fake,
    )

    records = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
    assert summary["received"] == summary["delivered"] + summary["rejected"] == len(users)
    assert len(records) == summary["rejected"]
    bodies = [r.json for r in fake.requests if r.path == "segment/mapping/"]
    assert len(bodies) == len(fake.requests)  # the audience exists: nothing is created
    rows = []
    for body in bodies:
        assert body["id_schema"] == [
            t
            for t in ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256")
            if t in body["id_schema"]
        ]
        for row in body["batch_data"]:
            assert len(row) == len(body["id_schema"])
            assert all(entry == {} or entry["audience_ids"] == [audience_id] for entry in row)
            rows.append(
                {kind: e["id"] for kind, e in zip(body["id_schema"], row, strict=True) if e}
            )
    return Sent(rows, bodies, summary, records, fake)


def test_an_email_only_user_is_sent_as_email_sha256(tmp_path: Path) -> None:
    sent = send(tmp_path, {"traits": {"email": "  Jane.Doe@Example.COM "}})

    assert sent.users == [{"EMAIL_SHA256": sha("jane.doe@example.com")}]
    assert sent.bodies[0]["id_schema"] == ["EMAIL_SHA256"]


def test_a_phone_only_user_is_sent_as_e164_phone_sha256(tmp_path: Path) -> None:
    sent = send(tmp_path, {"traits": {"phone": "+1 (415) 555-0100"}})

    assert sent.users == [{"PHONE_SHA256": sha("+14155550100")}]


@pytest.mark.parametrize(
    ("device_type", "advertising_id", "id_type"),
    [("ios", IDFA, "IDFA_SHA256"), ("android", AAID, "AAID_SHA256")],
)
def test_an_advertising_id_only_user_is_sent_by_device_type(
    device_type: str, advertising_id: str, id_type: str, tmp_path: Path
) -> None:
    sent = send(tmp_path, {"device": {"advertisingId": advertising_id, "type": device_type}})

    assert sent.users == [{id_type: sha(advertising_id.lower())}]
    assert sent.bodies[0]["id_schema"] == [id_type]


def test_a_batch_of_mixed_users_has_one_entry_per_slot_for_every_user(tmp_path: Path) -> None:
    sent = send(
        tmp_path,
        {"traits": {"email": "a@example.com"}},
        {"device": {"advertisingId": AAID, "type": "android"}},
        {"traits": {"phone": "+14155550100"}, "device": {"advertisingId": IDFA, "type": "ios"}},
    )

    (body,) = sent.bodies
    assert body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"]
    assert [[bool(entry) for entry in row] for row in body["batch_data"]] == [
        [True, False, False, False],
        [False, False, False, True],
        [False, True, True, False],
    ]


def test_a_zeroed_advertising_id_is_dropped_and_counted(tmp_path: Path) -> None:
    sent = send(
        tmp_path,
        {"traits": {"email": "a@example.com"}, "device": {"advertisingId": ZEROED, "type": "ios"}},
    )

    assert sent.users == [{"EMAIL_SHA256": sha("a@example.com")}]
    assert sent.summary["dropped_identifiers"] == {
        "advertising id is all zeros (tracking refused)": 1
    }
    assert sha(ZEROED) not in json.dumps(sent.bodies)


def test_an_event_whose_only_identifier_is_a_zeroed_id_is_rejected_no_identifier(
    tmp_path: Path,
) -> None:
    sent = send(tmp_path, {"device": {"advertisingId": ZEROED, "type": "android"}})

    assert sent.bodies == []
    assert [(r["line"], r["reason"]) for r in sent.rejected] == [(1, "no_identifier")]
    assert "all zeros" in sent.rejected[0]["message"]


def test_a_prehashed_upper_case_email_is_lowercased_and_not_hashed_again(
    tmp_path: Path,
) -> None:
    hashed = sha("jane.doe@example.com")

    sent = send(tmp_path, {"traits": {"email": hashed.upper()}})

    assert sent.users == [{"EMAIL_SHA256": hashed}]


def test_an_invalid_phone_is_dropped_but_the_email_is_still_sent(tmp_path: Path) -> None:
    sent = send(tmp_path, {"traits": {"email": "a@example.com", "phone": "+1 12"}})

    assert sent.users == [{"EMAIL_SHA256": sha("a@example.com")}]
    assert sent.summary["dropped_identifiers"] == {"phone is not a valid number": 1}
    assert sent.summary["delivered"] == 1


def test_a_phone_without_country_code_uses_the_default_phone_region(tmp_path: Path) -> None:
    sent = send(
        tmp_path, {"traits": {"phone": "020 7946 0958"}}, settings={"default_phone_region": "GB"}
    )

    assert sent.users == [{"PHONE_SHA256": sha("+442079460958")}]


def test_a_phone_without_country_code_and_no_default_region_is_rejected(tmp_path: Path) -> None:
    sent = send(tmp_path, {"traits": {"phone": "020 7946 0958"}})

    assert sent.bodies == []
    assert [r["reason"] for r in sent.rejected] == ["no_identifier"]
    assert "no default_phone_region" in sent.rejected[0]["message"]


def test_phone_format_without_plus_hashes_the_digits_only(tmp_path: Path) -> None:
    sent = send(
        tmp_path,
        {"traits": {"phone": "+1 415 555 0100"}},
        settings={"phone_format": "e164_no_plus"},
    )

    assert sent.users == [{"PHONE_SHA256": sha("14155550100")}]


@pytest.mark.parametrize(
    ("settings", "normalized"),
    [
        ({}, "jane.doe+news@example.com"),
        ({"email_remove_plus_suffix": True}, "jane.doe@example.com"),
        ({"email_remove_plus_suffix": True, "email_remove_dots": True}, "janedoe@example.com"),
    ],
    ids=["kept-by-default", "plus-suffix-removed", "plus-and-dots-removed"],
)
def test_email_settings_decide_what_is_hashed(
    settings: dict[str, Any], normalized: str, tmp_path: Path
) -> None:
    sent = send(tmp_path, {"traits": {"email": "Jane.Doe+News@example.com"}}, settings=settings)

    assert sent.users == [{"EMAIL_SHA256": sha(normalized)}]


def test_send_email_false_in_the_mapping_keeps_every_email_off_the_wire(tmp_path: Path) -> None:
    sent = send(
        tmp_path,
        {"traits": {"email": "a@example.com", "phone": "+14155550100"}},
        {"traits": {"email": "only-email@example.com"}},
        mapping={"send_email": False},
    )

    assert sent.users == [{"PHONE_SHA256": sha("+14155550100")}]
    assert sent.bodies[0]["id_schema"] == ["PHONE_SHA256"]
    assert [(r["line"], r["reason"]) for r in sent.rejected] == [(2, "no_identifier")]
    assert sha("a@example.com") not in json.dumps(sent.bodies)


def test_an_advertising_id_of_an_unknown_device_type_is_dropped(tmp_path: Path) -> None:
    sent = send(
        tmp_path,
        {"traits": {"email": "a@example.com"}, "device": {"advertisingId": IDFA, "type": "web"}},
    )

    assert sent.users == [{"EMAIL_SHA256": sha("a@example.com")}]
    assert sent.summary["dropped_identifiers"] == {
        "advertising id has no known device type (expected ios or android)": 1
    }


def test_nothing_unhashed_reaches_tiktok(tmp_path: Path) -> None:
    users = [
        {"traits": {"email": "Jane.Doe@Example.com", "phone": "+1 415 555 0100"}},
        {"traits": {"email": "not-an-email", "phone": "+44 20 7946 0958"}},
        {"traits": {"phone": "020 7946 0959"}, "device": {"advertisingId": IDFA, "type": "ios"}},
        {"device": {"advertisingId": AAID, "type": "android"}},
        {"traits": {"email": "x@example.org", "phone": "12"}},
    ]

    sent = send(tmp_path, *users, settings={"default_phone_region": "GB"})

    assert sent.summary["delivered"] == 5
    for request in sent.fake.requests:
        wire = json.dumps(request.json)
        assert "@" not in wire
        for digits in ("4155550100", "2079460958", "2079460959", "7946"):
            assert digits not in wire
        for advertising_id in (IDFA, AAID):
            assert advertising_id.lower() not in wire.lower()
            assert advertising_id.replace("-", "").lower() not in wire.lower()
    # and the rejected / dropped reasons name the identifier kind, never its value
    assert "not-an-email" not in json.dumps(sent.summary)
